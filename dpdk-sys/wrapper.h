/* Everything the dataplane binds from DPDK. One header, so bindgen and the
 * generated static-inline wrappers see exactly the same declarations. */
#include <rte_common.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_dev.h>
#include <rte_bus_vdev.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_flow.h>
#include <rte_ring.h>
#include <rte_version.h>
#include <rte_gso.h>

#include "shim.h"
