//! Direct routing: the IP packet is not touched. The frame goes to the real
//! server's MAC on the shared segment; the real server holds the VIP on a
//! loopback (arp_ignore=1, arp_announce=2) and answers the client directly.
//! The dataplane's neighbour step sets the MACs, so there is nothing to do
//! here but say where the frame goes.

use crate::types::Addr;

/// The next hop of a DR packet: the real server itself.
pub fn next_hop(rs: &Addr) -> Addr {
    *rs
}
