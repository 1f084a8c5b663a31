//! 802.1Q sub-interfaces: which port and tag each of the load balancer's
//! interfaces past the ports stands for, and the tag taken off on receive
//! and put on for transmit.
//!
//! The engine knows interfaces, not tags: a port's VLAN sub-interface is an
//! interface of its own (its addresses, its ARP, its routes), numbered
//! after the ports. A worker takes the tag off a frame of a configured VLAN
//! before the engine sees it, and the engine drops any frame still tagged
//! (a VLAN nobody configured, QinQ). On the way out the tag goes back on.
//! Ports without sub-interfaces never look at a tag here.

use lb_core::packet::PacketBuf;

use crate::dpdk::Mbuf;

const TPID: [u8; 2] = [0x81, 0x00];
const TAG_LEN: usize = 4;
const MACS: usize = 12;

/// The interfaces past the ports, as (port, VLAN id), and each port's
/// VLANs.
#[derive(Debug, Clone, Default)]
pub struct Vlans {
    ports: usize,
    of: Vec<(u16, u16)>,
    by_port: Vec<Vec<(u16, u16)>>,
}

impl Vlans {
    /// `ports` ports, followed by interfaces `ports..` for `vlans`, as
    /// (port index, VLAN id) in that order.
    pub fn new(ports: usize, vlans: &[(usize, u16)]) -> Vlans {
        let mut by_port = vec![Vec::new(); ports];
        let mut of = Vec::with_capacity(vlans.len());
        for (k, &(port, id)) in vlans.iter().enumerate() {
            let iface = u16::try_from(ports + k).unwrap_or(u16::MAX);
            let port16 = u16::try_from(port).unwrap_or(u16::MAX);
            of.push((port16, id));
            if let Some(v) = by_port.get_mut(port) {
                v.push((id, iface));
            }
        }
        Vlans { ports, of, by_port }
    }

    /// How many ports there are: interfaces from this number on are VLANs.
    #[inline]
    pub fn ports(&self) -> usize {
        self.ports
    }

    /// Whether `port` has sub-interfaces (so its frames' tags matter).
    #[inline]
    pub fn on_port(&self, port: usize) -> bool {
        self.by_port.get(port).is_some_and(|v| !v.is_empty())
    }

    /// The interface of VLAN `id` on `port`.
    pub fn interface(&self, port: usize, id: u16) -> Option<u16> {
        self.by_port
            .get(port)?
            .iter()
            .find(|&&(v, _)| v == id)
            .map(|&(_, i)| i)
    }

    /// The port interface `iface` sends on, and its tag (`None` for a
    /// port's own, untagged interface).
    #[inline]
    pub fn port_of(&self, iface: usize) -> (usize, Option<u16>) {
        match iface.checked_sub(self.ports).and_then(|k| self.of.get(k)) {
            Some(&(port, id)) => (usize::from(port), Some(id)),
            None => (iface, None),
        }
    }
}

/// The VLAN id of a frame with one 802.1Q tag: stripped by the driver
/// (`vlan_tci`) or in the frame itself; `None` for an untagged frame and
/// for one with a second tag inside (QinQ).
pub fn tag_of(m: &Mbuf) -> Option<u16> {
    if let Some(tci) = m.vlan_stripped() {
        return Some(tci & 0x0fff);
    }
    let d = PacketBuf::data(m);
    if d.get(MACS..MACS + 2) != Some(&TPID[..]) {
        return None;
    }
    // A second tag inside: QinQ, which stays tagged (and is dropped).
    let inner = d.get(MACS + TAG_LEN..MACS + TAG_LEN + 2)?;
    if inner == TPID || inner == [0x88, 0xa8] {
        return None;
    }
    Some(u16::from_be_bytes([d[MACS + 2], d[MACS + 3]]) & 0x0fff)
}

/// Takes a frame's 802.1Q tag off (or the driver's record of it).
pub fn strip(m: &mut Mbuf) -> bool {
    if m.vlan_stripped().is_some() {
        m.clear_vlan_stripped();
        return true;
    }
    let d = PacketBuf::data_mut(m);
    if d.len() < MACS + TAG_LEN {
        return false;
    }
    d.copy_within(0..MACS, TAG_LEN);
    PacketBuf::adj(m, TAG_LEN)
}

/// Puts an 802.1Q tag for VLAN `id` on a frame; `false`, unchanged, if the
/// mbuf has no headroom for it.
pub fn insert(m: &mut Mbuf, id: u16) -> bool {
    if !PacketBuf::prepend(m, TAG_LEN) {
        return false;
    }
    let d = PacketBuf::data_mut(m);
    d.copy_within(TAG_LEN..TAG_LEN + MACS, 0);
    d[MACS..MACS + 2].copy_from_slice(&TPID);
    d[MACS + 2..MACS + 4].copy_from_slice(&(id & 0x0fff).to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::Vlans;

    #[test]
    fn interfaces_past_the_ports_are_vlans() {
        // Two ports; VLANs 100 and 200 on port 1, 7 on port 0.
        let v = Vlans::new(2, &[(1, 100), (1, 200), (0, 7)]);
        assert!(v.on_port(0) && v.on_port(1) && !v.on_port(2));
        assert_eq!(v.interface(1, 200), Some(3));
        assert_eq!(v.interface(0, 7), Some(4));
        assert_eq!(v.interface(0, 100), None);
        assert_eq!(v.port_of(0), (0, None));
        assert_eq!(v.port_of(2), (1, Some(100)));
        assert_eq!(v.port_of(4), (0, Some(7)));
        assert!(!Vlans::new(1, &[]).on_port(0));
    }
}
