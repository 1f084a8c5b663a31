//! Full-NAT: requests leave from a local address and port (LIP:lport) to the
//! real server; replies come back to LIP:lport and leave from the VIP to the
//! client. The real server sees the LIP, not the client, and may be
//! anywhere routable.

use super::forward;
use crate::packet::Parsed;
use crate::session::Session;

/// Client to real server: source := LIP:lport, destination := RS:rport,
/// one less TTL; `false`, unchanged, when the TTL has run out.
#[inline]
pub fn inbound(frame: &mut [u8], p: &Parsed, s: &Session) -> bool {
    forward(frame, p, Some((&s.laddr, s.lport)), Some((&s.rs, s.rport)))
}

/// Real server to client: source := VIP:vport, destination :=
/// client:cport, one less TTL; `false`, unchanged, when the TTL has run out.
#[inline]
pub fn outbound(frame: &mut [u8], p: &Parsed, s: &Session) -> bool {
    forward(
        frame,
        p,
        Some((&s.vip, s.vport)),
        Some((&s.client, s.cport)),
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{apply, ACK, SYN};
    use super::*;
    use crate::packet::PacketBuf;
    use crate::session::State;
    use crate::testpkt::Builder;
    use crate::types::addr;
    use crate::types::ForwardMode;

    fn session() -> Session {
        Session::new(
            6,
            (addr("10.0.0.2".parse().unwrap()), 40000),
            (addr("198.18.0.10".parse().unwrap()), 80),
            (addr("10.1.0.5".parse().unwrap()), 8080),
            (addr("10.2.0.1".parse().unwrap()), 1027),
            ForwardMode::Fnat,
            State::SynRecv,
        )
    }

    #[test]
    fn both_directions() {
        let input = Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", SYN)
            .mss(1460)
            .build();
        let out = apply(input, |b, p| assert!(inbound(b.data_mut(), p, &session())));
        assert_eq!(
            out,
            Builder::tcp_v4("10.2.0.1:1027", "10.1.0.5:8080", SYN)
                .ttl(63)
                .mss(1460)
                .build()
        );

        let reply = Builder::tcp_v4("10.1.0.5:8080", "10.2.0.1:1027", SYN | ACK)
            .seq_ack(7, 1001)
            .build();
        let out = apply(reply, |b, p| assert!(outbound(b.data_mut(), p, &session())));
        assert_eq!(
            out,
            Builder::tcp_v4("198.18.0.10:80", "10.0.0.2:40000", SYN | ACK)
                .ttl(63)
                .seq_ack(7, 1001)
                .build()
        );
    }

    #[test]
    fn udp_with_payload_of_odd_length() {
        let input = Builder::udp_v4("10.0.0.2:40000", "198.18.0.10:80", b"odd").build();
        let out = apply(input, |b, p| assert!(inbound(b.data_mut(), p, &session())));
        assert_eq!(
            out,
            Builder::udp_v4("10.2.0.1:1027", "10.1.0.5:8080", b"odd")
                .ttl(63)
                .build()
        );
    }
}
