//! Per-worker session tables: every balanced connection, reachable from the
//! tuple of its inbound packets (client to VIP) and, where replies pass
//! through the load balancer (NAT, FNAT), from the tuple of its replies.
//!
//! One table per worker, preallocated: sessions live in one array, a free
//! list links the unused ones, and an open-addressed index of cache-line
//! buckets finds them, so inserting and removing never allocate. Expiry uses a
//! timer wheel with lazy re-arming: a packet only stores the new deadline
//! in its session; when the session's slot comes round, a session whose
//! deadline moved is re-linked further on instead of expiring.

mod owners;
mod table;
pub mod tcp;

pub use owners::NatOwners;
pub use table::{ExpireOutcome, Hashed, SessionId, SessionTable, Side, TableFull, SESSION_BYTES};
pub use tcp::{next_state, Direction, State};

use crate::types::ForwardMode;
pub use crate::types::{addr, addr_v4, ip, Addr, FlowKey, NIL};

/// Session flag bits.
pub mod flags {
    /// The slot holds a live session.
    pub const USED: u8 = 0x01;
    /// The session has a reply tuple (NAT, FNAT).
    pub const HAS_OUT: u8 = 0x02;
    /// A persistence template, not a connection.
    pub const TEMPLATE: u8 = 0x04;
    /// Counted as inactive on its real server (IPVS's CONN_F_INACTIVE).
    pub const INACTIVE: u8 = 0x08;
    /// Out of the index but still alive: a template that lookups must no
    /// longer find while connections still follow it.
    pub const UNHASHED: u8 = 0x10;
    /// Its reply tuple waits to enter the index (see
    /// `SessionTable::insert_deferred`).
    pub const OUT_PENDING: u8 = 0x20;
}

/// One balanced connection (or persistence template): 96 bytes aligned to
/// 32, so that one spans exactly two cache lines wherever it sits in the
/// table (unaligned, a third of them would touch three); with its share of
/// the index a session costs 115 bytes of table.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct Session {
    /// The client's address and port (the inbound source).
    pub client: Addr,
    /// The VIP and port the client addressed (the inbound destination).
    pub vip: Addr,
    /// The real server's address and port.
    pub rs: Addr,
    /// Full-NAT: the local address and port the real server sees as source.
    pub laddr: Addr,
    pub cport: u16,
    pub vport: u16,
    pub rport: u16,
    pub lport: u16,
    pub proto: u8,
    pub mode: ForwardMode,
    pub state: State,
    pub flags: u8,
    /// The worker's handle of the real server (its counters, and through
    /// it the service's).
    pub dest: u32,
    /// When the session expires, in the table's clock (seconds).
    pub expires: u32,
    /// A connection's persistence template ([`NIL`] if none), or a
    /// template's count of connections following it.
    link: u32,
    timer_next: u32,
    /// The previous session in the timer slot; the first one holds its
    /// slot with the top bit set.
    timer_prev: u32,
}

const _: () =
    assert!(std::mem::size_of::<Session>() == 96 && std::mem::align_of::<Session>() == 32);

impl Session {
    const EMPTY: Session = Session {
        client: [0; 16],
        vip: [0; 16],
        rs: [0; 16],
        laddr: [0; 16],
        cport: 0,
        vport: 0,
        rport: 0,
        lport: 0,
        proto: 0,
        mode: ForwardMode::Dr,
        state: State::None,
        flags: 0,
        dest: NIL,
        expires: 0,
        link: NIL,
        timer_next: NIL,
        timer_prev: NIL,
    };

    /// A new session's fields; links are the table's business.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        proto: u8,
        client: (Addr, u16),
        vip: (Addr, u16),
        rs: (Addr, u16),
        laddr: (Addr, u16),
        mode: ForwardMode,
        state: State,
    ) -> Session {
        let has_out = matches!(mode, ForwardMode::Nat | ForwardMode::Fnat);
        Session {
            client: client.0,
            cport: client.1,
            vip: vip.0,
            vport: vip.1,
            rs: rs.0,
            rport: rs.1,
            laddr: laddr.0,
            lport: laddr.1,
            proto,
            mode,
            state,
            flags: flags::INACTIVE | if has_out { flags::HAS_OUT } else { 0 },
            ..Session::EMPTY
        }
    }

    /// The tuple of the client's packets.
    pub fn inbound_key(&self) -> FlowKey {
        FlowKey {
            src: self.client,
            dst: self.vip,
            sport: self.cport,
            dport: self.vport,
            proto: self.proto,
        }
    }

    /// The tuple of the real server's replies: to the local address in
    /// Full-NAT, to the client in NAT.
    pub fn outbound_key(&self) -> FlowKey {
        let (dst, dport) = if self.mode == ForwardMode::Fnat {
            (self.laddr, self.lport)
        } else {
            (self.client, self.cport)
        };
        FlowKey {
            src: self.rs,
            dst,
            sport: self.rport,
            dport,
            proto: self.proto,
        }
    }

    pub fn is_template(&self) -> bool {
        self.flags & flags::TEMPLATE != 0
    }

    pub fn has_outbound(&self) -> bool {
        self.flags & flags::HAS_OUT != 0
    }

    pub fn is_inactive(&self) -> bool {
        self.flags & flags::INACTIVE != 0
    }

    /// The persistence template a connection follows, or [`NIL`].
    pub fn template(&self) -> u32 {
        if self.is_template() {
            NIL
        } else {
            self.link
        }
    }

    /// Sets the template a connection follows.
    pub fn set_template(&mut self, template: u32) {
        debug_assert!(!self.is_template());
        self.link = template;
    }

    /// How many connections follow a template (0 for a connection).
    pub fn refs(&self) -> u32 {
        if self.is_template() {
            self.link
        } else {
            0
        }
    }

    /// Sets how many connections follow a template.
    pub fn set_refs(&mut self, refs: u32) {
        debug_assert!(self.is_template());
        self.link = refs;
    }
}
