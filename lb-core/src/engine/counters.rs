//! A worker's counters, indexed by [`Counter`]: what it did, and every
//! reason it dropped a packet.

/// Everything a worker counts. Names are stable: they become metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Counter {
    /// Packets handed to the engine.
    RxPackets,
    /// Packets sent on towards a real server or a client.
    Forwarded,
    /// ARP, Neighbor Solicitations and ICMP echo answered in place.
    Answered,
    /// Packets passed to another worker.
    HandedOver,
    /// Packets sent to the kernel's exception path.
    Exception,
    /// ICMP errors translated for a balanced connection.
    IcmpTranslated,
    /// Sessions created.
    SessionsCreated,
    /// Sessions expired or closed.
    SessionsExpired,
    /// Persistence templates created.
    TemplatesCreated,
    /// Transport checksums a kernel sender left partial, finished on
    /// receive.
    RxChecksumFinished,
    DropL2Malformed,
    DropL3Malformed,
    DropL4Malformed,
    /// A Neighbor Solicitation or Advertisement that fails RFC 4861's
    /// checks (hop limit not 255, bad checksum or options), or a multicast
    /// solicitation that gives no address to answer to.
    DropNdiscInvalid,
    /// The destination MAC is neither the port's nor broadcast/multicast.
    DropNotOurMac,
    /// A fragment of a balanced service (not reassembled).
    DropFragment,
    DropTtlExceeded,
    /// A TCP segment other than SYN without a session.
    DropTcpNotSyn,
    /// The scheduler found no available real server.
    DropNoDest,
    /// The session table is full.
    DropTableFull,
    /// No local address/port free for a Full-NAT connection.
    DropLaddrExhausted,
    /// The new session's reply tuple is already in use.
    DropTupleCollision,
    DropNoRoute,
    /// A reply to a local address with no session.
    DropNoSession,
    /// Too big for the outgoing link, with DF set (ICMP sent back).
    DropTooBig,
    DropNoHeadroom,
    /// A kind of packet the engine does not handle.
    DropUnsupported,
    /// A packet of a session whose real server was removed, with
    /// `expire_nodest_conn` on: the session went with it.
    DropDestRemoved,
    /// The IP packet is longer than the frame that carried it: cut short
    /// by a port whose frames are smaller than a kernel super-frame.
    DropTruncated,
    /// A TCP segment with SYN and RST, or SYN and FIN.
    DropTcpBadFlags,
    /// A session's first packet with a wrong transport checksum.
    DropBadChecksum,
    /// A frame tagged with a VLAN that no interface has.
    DropVlanUnknown,
    /// A frame with an 802.1ad tag or two tags (QinQ).
    DropQinq,
    /// Sessions opened by a TCP segment other than a SYN, with
    /// `sloppy_tcp` on: a connection another director began.
    SessionsPickedUp,
    /// A new connection from a client in its service's deny list.
    DropDenied,
    /// A new connection from a client not in its service's allow list.
    DropNotAllowed,
    /// Sessions a peer director synced, installed or brought up to date.
    SyncInstalled,
    SyncUpdated,
    /// Sync records refused: their service or real server is not
    /// configured here, or the Full-NAT port is not this worker's.
    SyncUnknown,
    /// Sync records refused to keep room for this director's own
    /// connections (the table is 90% full).
    SyncTableFull,
    /// Records for the peers lost: the outbox was full.
    SyncOutboxFull,
    /// Sessions a peer director closed before their time (a real server
    /// flushed, a tuple reused for a new connection), closed here too.
    SyncRemoved,
}

impl Counter {
    pub const ALL: [Counter; 42] = [
        Counter::RxPackets,
        Counter::Forwarded,
        Counter::Answered,
        Counter::HandedOver,
        Counter::Exception,
        Counter::IcmpTranslated,
        Counter::SessionsCreated,
        Counter::SessionsExpired,
        Counter::TemplatesCreated,
        Counter::RxChecksumFinished,
        Counter::DropL2Malformed,
        Counter::DropL3Malformed,
        Counter::DropL4Malformed,
        Counter::DropNdiscInvalid,
        Counter::DropNotOurMac,
        Counter::DropFragment,
        Counter::DropTtlExceeded,
        Counter::DropTcpNotSyn,
        Counter::DropNoDest,
        Counter::DropTableFull,
        Counter::DropLaddrExhausted,
        Counter::DropTupleCollision,
        Counter::DropNoRoute,
        Counter::DropNoSession,
        Counter::DropTooBig,
        Counter::DropNoHeadroom,
        Counter::DropUnsupported,
        Counter::DropDestRemoved,
        Counter::DropTruncated,
        Counter::DropTcpBadFlags,
        Counter::DropBadChecksum,
        Counter::DropVlanUnknown,
        Counter::DropQinq,
        Counter::SessionsPickedUp,
        Counter::DropDenied,
        Counter::DropNotAllowed,
        Counter::SyncInstalled,
        Counter::SyncUpdated,
        Counter::SyncUnknown,
        Counter::SyncTableFull,
        Counter::SyncOutboxFull,
        Counter::SyncRemoved,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::RxPackets => "rx_packets",
            Counter::Forwarded => "forwarded",
            Counter::Answered => "answered",
            Counter::HandedOver => "handed_over",
            Counter::Exception => "exception",
            Counter::IcmpTranslated => "icmp_translated",
            Counter::SessionsCreated => "sessions_created",
            Counter::SessionsExpired => "sessions_expired",
            Counter::TemplatesCreated => "templates_created",
            Counter::RxChecksumFinished => "rx_checksum_finished",
            Counter::DropL2Malformed => "drop_l2_malformed",
            Counter::DropL3Malformed => "drop_l3_malformed",
            Counter::DropL4Malformed => "drop_l4_malformed",
            Counter::DropNdiscInvalid => "drop_ndisc_invalid",
            Counter::DropNotOurMac => "drop_not_our_mac",
            Counter::DropFragment => "drop_fragment",
            Counter::DropTtlExceeded => "drop_ttl_exceeded",
            Counter::DropTcpNotSyn => "drop_tcp_not_syn",
            Counter::DropNoDest => "drop_no_dest",
            Counter::DropTableFull => "drop_table_full",
            Counter::DropLaddrExhausted => "drop_laddr_exhausted",
            Counter::DropTupleCollision => "drop_tuple_collision",
            Counter::DropNoRoute => "drop_no_route",
            Counter::DropNoSession => "drop_no_session",
            Counter::DropTooBig => "drop_too_big",
            Counter::DropNoHeadroom => "drop_no_headroom",
            Counter::DropUnsupported => "drop_unsupported",
            Counter::DropDestRemoved => "drop_dest_removed",
            Counter::DropTruncated => "drop_truncated",
            Counter::DropTcpBadFlags => "drop_tcp_bad_flags",
            Counter::DropBadChecksum => "drop_bad_checksum",
            Counter::DropVlanUnknown => "drop_vlan_unknown",
            Counter::DropQinq => "drop_qinq",
            Counter::SessionsPickedUp => "sessions_picked_up",
            Counter::DropDenied => "drop_denied",
            Counter::DropNotAllowed => "drop_not_allowed",
            Counter::SyncInstalled => "sync_installed",
            Counter::SyncUpdated => "sync_updated",
            Counter::SyncUnknown => "sync_unknown",
            Counter::SyncTableFull => "sync_table_full",
            Counter::SyncOutboxFull => "sync_outbox_full",
            Counter::SyncRemoved => "sync_removed",
        }
    }

    /// Whether the counter counts dropped packets.
    pub fn is_drop(self) -> bool {
        self.name().starts_with("drop_")
    }
}

/// The counters of one worker.
#[derive(Debug, Clone)]
pub struct Counters([u64; Counter::ALL.len()]);

impl Default for Counters {
    fn default() -> Counters {
        Counters([0; Counter::ALL.len()])
    }
}

impl Counters {
    #[inline]
    pub fn add(&mut self, c: Counter, n: u64) {
        self.0[c as usize] += n;
    }

    #[inline]
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }

    /// Adds another worker's counters (readers sum over workers).
    pub fn merge(&mut self, other: &Counters) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    /// Every counter with its name.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.iter().map(|&c| (c, self.get(c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_unique_and_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?} out of place in ALL");
        }
        let mut names: Vec<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len());
        assert!(Counter::DropNoDest.is_drop() && !Counter::Forwarded.is_drop());
    }
}
