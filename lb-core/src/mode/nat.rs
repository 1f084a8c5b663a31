//! NAT (LVS-NAT, "masquerading"): requests get the real server's address
//! and port as destination; replies, which come back through the load
//! balancer (the real server's gateway), get the VIP and port back as source.

use super::forward;
use crate::packet::Parsed;
use crate::session::Session;

/// Client to real server: destination := RS:rport, one less TTL; `false`,
/// unchanged, when the TTL has run out.
#[inline]
pub fn inbound(frame: &mut [u8], p: &Parsed, s: &Session) -> bool {
    forward(frame, p, None, Some((&s.rs, s.rport)))
}

/// Real server to client: source := VIP:vport, one less TTL; `false`,
/// unchanged, when the TTL has run out.
#[inline]
pub fn outbound(frame: &mut [u8], p: &Parsed, s: &Session) -> bool {
    forward(frame, p, Some((&s.vip, s.vport)), None)
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
            ([0; 16], 0),
            ForwardMode::Nat,
            State::SynRecv,
        )
    }

    #[test]
    fn request_gets_the_real_server_as_destination() {
        let input = Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", SYN)
            .mss(1460)
            .build();
        let out = apply(input, |b, p| assert!(inbound(b.data_mut(), p, &session())));
        let want = Builder::tcp_v4("10.0.0.2:40000", "10.1.0.5:8080", SYN)
            .ttl(63)
            .mss(1460)
            .build();
        assert_eq!(out, want);
    }

    #[test]
    fn reply_gets_the_vip_as_source() {
        let input = Builder::tcp_v4("10.1.0.5:8080", "10.0.0.2:40000", SYN | ACK).build();
        let out = apply(input, |b, p| assert!(outbound(b.data_mut(), p, &session())));
        assert_eq!(
            out,
            Builder::tcp_v4("198.18.0.10:80", "10.0.0.2:40000", SYN | ACK)
                .ttl(63)
                .build()
        );
    }

    #[test]
    fn udp_and_ipv6() {
        let input = Builder::udp_v4("10.0.0.2:40000", "198.18.0.10:80", b"query").build();
        let out = apply(input, |b, p| assert!(inbound(b.data_mut(), p, &session())));
        assert_eq!(
            out,
            Builder::udp_v4("10.0.0.2:40000", "10.1.0.5:8080", b"query")
                .ttl(63)
                .build()
        );

        let mut s = session();
        s.client = addr("fd00::2".parse().unwrap());
        s.vip = addr("fd00::10".parse().unwrap());
        s.rs = addr("fd01::5".parse().unwrap());
        let input = Builder::tcp_v6("[fd00::2]:40000", "[fd00::10]:80", ACK)
            .payload(b"GET /")
            .build();
        let out = apply(input, |b, p| assert!(inbound(b.data_mut(), p, &s)));
        assert_eq!(
            out,
            Builder::tcp_v6("[fd00::2]:40000", "[fd01::5]:8080", ACK)
                .ttl(63)
                .payload(b"GET /")
                .build()
        );
    }
}
