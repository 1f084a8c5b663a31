//! Connection states and their transitions, as IPVS's `tcp_states` table
//! (ip_vs_proto_tcp.c) defines them, and the timeout of each state.

use crate::types::Timeouts;
use crate::wire::tcp::Flags;

/// A session's state. TCP states follow IPVS; UDP and ICMP sessions have
/// one state each; templates hold persistence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum State {
    None = 0,
    Established,
    SynSent,
    SynRecv,
    FinWait,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    SynAck,
    Udp,
    Icmp,
    Template,
}

impl State {
    /// The state a peer's sync record names (`state as u8`): any a
    /// connection can be in, not `None` or `Template`.
    pub fn of_connection(b: u8) -> Option<State> {
        use State::*;
        [
            Established,
            SynSent,
            SynRecv,
            FinWait,
            TimeWait,
            Close,
            CloseWait,
            LastAck,
            Listen,
            SynAck,
            Udp,
            Icmp,
        ]
        .into_iter()
        .find(|s| *s as u8 == b)
    }

    /// ipvsadm's name for listings (`ESTABLISHED`, `SYN_RECV`, ...).
    pub fn name(self) -> &'static str {
        match self {
            State::None => "NONE",
            State::Established => "ESTABLISHED",
            State::SynSent => "SYN_SENT",
            State::SynRecv => "SYN_RECV",
            State::FinWait => "FIN_WAIT",
            State::TimeWait => "TIME_WAIT",
            State::Close => "CLOSE",
            State::CloseWait => "CLOSE_WAIT",
            State::LastAck => "LAST_ACK",
            State::Listen => "LISTEN",
            State::SynAck => "SYNACK",
            State::Udp => "UDP",
            State::Icmp => "ICMP",
            State::Template => "NONE",
        }
    }

    /// Whether a TCP connection in this state counts as active (IPVS:
    /// only ESTABLISHED does).
    pub fn is_active(self) -> bool {
        self == State::Established
    }

    /// The timeout of this state, in seconds.
    pub fn timeout(self, t: &Timeouts) -> u32 {
        match self {
            State::None => 2,
            State::Established => t.tcp_established,
            State::SynSent => t.tcp_syn_sent,
            State::SynRecv => t.tcp_syn_recv,
            State::FinWait => t.tcp_fin_wait,
            State::TimeWait => t.tcp_time_wait,
            State::Close => t.tcp_close,
            State::CloseWait => t.tcp_close_wait,
            State::LastAck => t.tcp_last_ack,
            State::Listen | State::SynAck => 120,
            State::Udp => t.udp,
            State::Icmp => t.icmp,
            State::Template => 0,
        }
    }
}

/// Which way a segment travels, as IPVS's table distinguishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server, when the LB also sees the replies (NAT, FNAT).
    Input,
    /// Server to client.
    Output,
    /// Client to server when replies bypass the LB (DR, TUN).
    InputOnly,
}

use State::{
    Close as CL, CloseWait as CW, Established as ES, FinWait as FW, LastAck as LA, Listen as LI,
    SynRecv as SR, SynSent as SS, TimeWait as TW,
};

/// Rows: syn, fin, ack, rst; columns: the 11 TCP states in enum order.
type Table = [[State; 11]; 4];

const INPUT: Table = [
    [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
    [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
    [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
    [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],
];

const OUTPUT: Table = [
    [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
    [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
    [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
    [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
];

const INPUT_ONLY: Table = [
    [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
    [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
    [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
    [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
];

/// The state after a segment with `flags` travelling in `dir`. Segments
/// with none of SYN, FIN, ACK, RST leave the state alone (as in IPVS, RST
/// takes precedence, then SYN, then FIN, then ACK).
#[inline]
pub fn next_state(state: State, dir: Direction, flags: Flags) -> State {
    // Most segments: an established connection's data and ACKs, which
    // leave it established in every direction (the table's answer, found
    // without reading it).
    if state == ES && flags.0 & (Flags::SYN | Flags::FIN | Flags::RST) == 0 {
        return ES;
    }
    by_table(state, dir, flags)
}

fn by_table(state: State, dir: Direction, flags: Flags) -> State {
    let col = state as usize;
    if col >= 11 {
        return state;
    }
    let row = if flags.rst() {
        3
    } else if flags.syn() {
        0
    } else if flags.fin() {
        1
    } else if flags.ack() {
        2
    } else {
        return state;
    };
    let table = match dir {
        Direction::Input => &INPUT,
        Direction::Output => &OUTPUT,
        Direction::InputOnly => &INPUT_ONLY,
    };
    table[row][col]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYN: Flags = Flags(Flags::SYN);
    const SYN_ACK: Flags = Flags(Flags::SYN | Flags::ACK);
    const ACK: Flags = Flags(Flags::ACK);
    const FIN_ACK: Flags = Flags(Flags::FIN | Flags::ACK);
    const RST: Flags = Flags(Flags::RST | Flags::ACK);

    fn walk(start: State, steps: &[(Direction, Flags)]) -> Vec<State> {
        let mut s = start;
        steps
            .iter()
            .map(|&(d, f)| {
                s = next_state(s, d, f);
                s
            })
            .collect()
    }

    #[test]
    fn full_nat_handshake_and_close() {
        use Direction::{Input as I, Output as O};
        assert_eq!(
            walk(
                State::None,
                &[
                    (I, SYN),
                    (O, SYN_ACK),
                    (I, ACK),
                    (I, FIN_ACK),
                    (O, ACK),
                    (O, FIN_ACK),
                    (I, ACK)
                ]
            ),
            [SR, SR, ES, CW, CW, TW, TW]
        );
        // The server closes first.
        assert_eq!(
            walk(ES, &[(O, FIN_ACK), (I, ACK), (I, FIN_ACK)]),
            [FW, FW, TW]
        );
    }

    #[test]
    fn direct_routing_sees_the_client_only() {
        use Direction::InputOnly as IO;
        assert_eq!(
            walk(
                State::None,
                &[(IO, SYN), (IO, ACK), (IO, FIN_ACK), (IO, ACK)]
            ),
            [SR, ES, FW, FW]
        );
        // IPVS keeps SYN_RECV on a client RST when it sees one side only.
        assert_eq!(next_state(SR, IO, RST), SR);
        assert_eq!(next_state(ES, IO, RST), CL);
    }

    #[test]
    fn the_established_shortcut_is_the_tables_answer() {
        for dir in [Direction::Input, Direction::Output, Direction::InputOnly] {
            for f in 0..=u8::MAX {
                assert_eq!(
                    next_state(ES, dir, Flags(f)),
                    by_table(ES, dir, Flags(f)),
                    "{dir:?} {f:#x}"
                );
            }
        }
    }

    #[test]
    fn resets_and_strays() {
        assert_eq!(next_state(ES, Direction::Input, RST), CL);
        assert_eq!(next_state(ES, Direction::Output, RST), CL);
        assert_eq!(
            next_state(State::None, Direction::Input, ACK),
            CL,
            "an ACK with no handshake"
        );
        assert_eq!(next_state(ES, Direction::Input, Flags(0)), ES);
        assert_eq!(next_state(State::Udp, Direction::Input, SYN), State::Udp);
    }

    #[test]
    fn timeouts_follow_the_state() {
        let t = Timeouts::default();
        assert_eq!(ES.timeout(&t), 900);
        assert_eq!(SR.timeout(&t), 60);
        assert_eq!(TW.timeout(&t), 120);
        assert_eq!(CL.timeout(&t), 10);
        assert_eq!(State::Udp.timeout(&t), 300);
        assert!(ES.is_active() && !SR.is_active());
    }
}
