#include <rte_errno.h>
#include <rte_lcore.h>

#include "shim.h"

int lb_rte_errno(void) { return rte_errno; }

unsigned lb_rte_lcore_id(void) { return rte_lcore_id(); }

unsigned lb_rte_socket_id(void) { return rte_socket_id(); }
