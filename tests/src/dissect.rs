//! Decodes a frame into named header fields, for readable diffs.
//!
//! This parser is deliberately independent of lb-core's packet views: a
//! golden test compares the dataplane's output with hand-checked packets, and
//! a shared parser could hide a bug on both sides. It never panics: whatever
//! it cannot decode becomes a `malformed` or `payload` field. Checksums are
//! shown with their validity, so a bad incremental update shows up as a field
//! difference even if every other byte is right.

use std::fmt::Write;

/// One decoded field, e.g. `ipv4.ttl` = `64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub value: String,
}

struct Out(Vec<Field>);

impl Out {
    fn add(&mut self, name: &str, value: impl ToString) {
        self.0.push(Field {
            name: name.to_owned(),
            value: value.to_string(),
        });
    }
}

fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ipv4(b: &[u8]) -> String {
    format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
}

fn ipv6(b: &[u8]) -> String {
    let raw: [u8; 16] = b.try_into().expect("16 bytes");
    std::net::Ipv6Addr::from(raw).to_string()
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// The Internet checksum (RFC 1071) of `data` plus an initial sum.
pub fn checksum(initial: u32, data: &[u8]) -> u16 {
    let mut sum = initial;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).expect("folded to 16 bits")
}

fn shown_checksum(stored: u16, valid: bool) -> String {
    format!("{stored:#06x} ({})", if valid { "valid" } else { "BAD" })
}

/// Decodes an Ethernet frame.
pub fn dissect(frame: &[u8]) -> Vec<Field> {
    let mut o = Out(Vec::new());
    o.add("frame.len", frame.len());
    if frame.len() < 14 {
        o.add(
            "malformed",
            format!(
                "{} bytes, shorter than Ethernet: {}",
                frame.len(),
                hex(frame)
            ),
        );
        return o.0;
    }
    o.add("eth.dst", mac(&frame[0..6]));
    o.add("eth.src", mac(&frame[6..12]));
    let mut ethertype = be16(frame, 12).unwrap_or(0);
    let mut off = 14;
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        let (Some(tci), Some(inner)) = (be16(frame, off), be16(frame, off + 2)) else {
            o.add("malformed", "VLAN tag cut short");
            return o.0;
        };
        o.add("vlan.pcp", tci >> 13);
        o.add("vlan.id", tci & 0x0fff);
        ethertype = inner;
        off += 4;
    }
    o.add("eth.type", format!("{ethertype:#06x}"));
    let rest = &frame[off..];
    match ethertype {
        0x0800 => dissect_ipv4(&mut o, rest),
        0x86dd => dissect_ipv6(&mut o, rest),
        0x0806 => dissect_arp(&mut o, rest),
        _ => o.add("payload", hex(rest)),
    }
    o.0
}

fn dissect_arp(o: &mut Out, b: &[u8]) {
    if b.len() < 28 {
        o.add("malformed", format!("ARP cut short: {}", hex(b)));
        return;
    }
    o.add("arp.htype", be16(b, 0).unwrap_or(0));
    o.add("arp.ptype", format!("{:#06x}", be16(b, 2).unwrap_or(0)));
    o.add("arp.op", be16(b, 6).unwrap_or(0));
    o.add("arp.sha", mac(&b[8..14]));
    o.add("arp.spa", ipv4(&b[14..18]));
    o.add("arp.tha", mac(&b[18..24]));
    o.add("arp.tpa", ipv4(&b[24..28]));
    if b.len() > 28 {
        o.add("padding", hex(&b[28..]));
    }
}

fn dissect_ipv4(o: &mut Out, b: &[u8]) {
    if b.len() < 20 {
        o.add("malformed", format!("IPv4 header cut short: {}", hex(b)));
        return;
    }
    let ihl = usize::from(b[0] & 0x0f) * 4;
    let total = usize::from(be16(b, 2).unwrap_or(0));
    o.add("ipv4.version", b[0] >> 4);
    o.add("ipv4.ihl", ihl);
    o.add("ipv4.tos", format!("{:#04x}", b[1]));
    o.add("ipv4.total_len", total);
    o.add("ipv4.id", format!("{:#06x}", be16(b, 4).unwrap_or(0)));
    let frag = be16(b, 6).unwrap_or(0);
    o.add("ipv4.flags", format!("{:#03x}", frag >> 13));
    o.add("ipv4.frag_offset", frag & 0x1fff);
    o.add("ipv4.ttl", b[8]);
    o.add("ipv4.proto", b[9]);
    if ihl < 20 || b.len() < ihl || total < ihl || total > b.len() {
        o.add(
            "ipv4.checksum",
            format!("{:#06x}", be16(b, 10).unwrap_or(0)),
        );
        o.add("ipv4.src", ipv4(&b[12..16]));
        o.add("ipv4.dst", ipv4(&b[16..20]));
        o.add(
            "malformed",
            format!(
                "IPv4 lengths inconsistent (ihl {ihl}, total {total}, have {})",
                b.len()
            ),
        );
        o.add("payload", hex(&b[20..]));
        return;
    }
    o.add(
        "ipv4.checksum",
        shown_checksum(be16(b, 10).unwrap_or(0), checksum(0, &b[..ihl]) == 0),
    );
    o.add("ipv4.src", ipv4(&b[12..16]));
    o.add("ipv4.dst", ipv4(&b[16..20]));
    if ihl > 20 {
        o.add("ipv4.options", hex(&b[20..ihl]));
    }
    let body = &b[ihl..total];
    let pseudo = |len: usize| -> u32 {
        let mut s = 0u32;
        for i in (12..20).step_by(2) {
            s += u32::from(be16(b, i).unwrap_or(0));
        }
        s + u32::from(b[9]) + u32::try_from(len).unwrap_or(u32::MAX)
    };
    if frag & 0x1fff != 0 || frag & 0x2000 != 0 {
        o.add("payload", hex(body));
    } else {
        dissect_l4(o, b[9], body, pseudo(body.len()));
    }
    if b.len() > total {
        o.add("padding", hex(&b[total..]));
    }
}

fn dissect_ipv6(o: &mut Out, b: &[u8]) {
    if b.len() < 40 {
        o.add("malformed", format!("IPv6 header cut short: {}", hex(b)));
        return;
    }
    let plen = usize::from(be16(b, 4).unwrap_or(0));
    let vtf = be32(b, 0).unwrap_or(0);
    o.add("ipv6.version", vtf >> 28);
    o.add("ipv6.tclass", format!("{:#04x}", (vtf >> 20) & 0xff));
    o.add("ipv6.flow", format!("{:#07x}", vtf & 0xfffff));
    o.add("ipv6.payload_len", plen);
    o.add("ipv6.next_header", b[6]);
    o.add("ipv6.hop_limit", b[7]);
    o.add("ipv6.src", ipv6(&b[8..24]));
    o.add("ipv6.dst", ipv6(&b[24..40]));
    if 40 + plen > b.len() {
        o.add(
            "malformed",
            format!("IPv6 payload length {plen} exceeds the frame"),
        );
        o.add("payload", hex(&b[40..]));
        return;
    }
    let body = &b[40..40 + plen];
    let mut pseudo = 0u32;
    for i in (8..40).step_by(2) {
        pseudo += u32::from(be16(b, i).unwrap_or(0));
    }
    pseudo += u32::try_from(plen).unwrap_or(u32::MAX) + u32::from(b[6]);
    dissect_l4(o, b[6], body, pseudo);
    if b.len() > 40 + plen {
        o.add("padding", hex(&b[40 + plen..]));
    }
}

fn dissect_l4(o: &mut Out, proto: u8, b: &[u8], pseudo: u32) {
    match proto {
        6 if b.len() >= 20 => {
            let doff = usize::from(b[12] >> 4) * 4;
            o.add("tcp.sport", be16(b, 0).unwrap_or(0));
            o.add("tcp.dport", be16(b, 2).unwrap_or(0));
            o.add("tcp.seq", be32(b, 4).unwrap_or(0));
            o.add("tcp.ack", be32(b, 8).unwrap_or(0));
            o.add("tcp.doff", doff);
            o.add("tcp.flags", tcp_flags(b[13]));
            o.add("tcp.window", be16(b, 14).unwrap_or(0));
            o.add(
                "tcp.checksum",
                shown_checksum(be16(b, 16).unwrap_or(0), checksum(pseudo, b) == 0),
            );
            o.add("tcp.urgent", be16(b, 18).unwrap_or(0));
            if doff < 20 || doff > b.len() {
                o.add(
                    "malformed",
                    format!("TCP data offset {doff} with {} bytes", b.len()),
                );
                return;
            }
            if doff > 20 {
                o.add("tcp.options", hex(&b[20..doff]));
            }
            if b.len() > doff {
                o.add("payload", hex(&b[doff..]));
            }
        }
        17 if b.len() >= 8 => {
            let stored = be16(b, 6).unwrap_or(0);
            o.add("udp.sport", be16(b, 0).unwrap_or(0));
            o.add("udp.dport", be16(b, 2).unwrap_or(0));
            o.add("udp.len", be16(b, 4).unwrap_or(0));
            // Zero means "no checksum" over IPv4.
            let valid = stored == 0 || checksum(pseudo, b) == 0;
            o.add("udp.checksum", shown_checksum(stored, valid));
            if b.len() > 8 {
                o.add("payload", hex(&b[8..]));
            }
        }
        1 | 58 if b.len() >= 4 => {
            let name = if proto == 1 { "icmp" } else { "icmpv6" };
            let initial = if proto == 58 { pseudo } else { 0 };
            o.add(&format!("{name}.type"), b[0]);
            o.add(&format!("{name}.code"), b[1]);
            o.add(
                &format!("{name}.checksum"),
                shown_checksum(be16(b, 2).unwrap_or(0), checksum(initial, b) == 0),
            );
            if b.len() > 4 {
                o.add("payload", hex(&b[4..]));
            }
        }
        4 => {
            o.add("ipip", "inner IPv4 follows");
            dissect_ipv4(o, b);
        }
        _ => {
            o.add("l4.proto", proto);
            o.add("payload", hex(b));
        }
    }
}

fn tcp_flags(f: u8) -> String {
    let names = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
    let set: Vec<&str> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| f & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect();
    if set.is_empty() {
        "none".into()
    } else {
        set.join("|")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(f: &'a [Field], name: &str) -> &'a str {
        &f.iter()
            .find(|x| x.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .value
    }

    /// A TCP SYN 10.0.0.2:40000 -> 198.18.0.10:80, checked by hand: the IPv4
    /// checksum 0x7cc2 and the TCP checksum 0x6e60 are right for these bytes.
    const SYN: [u8; 54] = [
        0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0x01, 0x01, 0x08, 0x00, // eth
        0x45, 0x00, 0x00, 0x28, 0x00, 0x01, 0x00, 0x00, 0x40, 0x06, 0x00, 0x00, // ipv4..
        10, 0, 0, 2, 198, 18, 0, 10, // addrs
        0x9c, 0x40, 0x00, 0x50, 0, 0, 0x03, 0xe8, 0, 0, 0, 0, 0x50, 0x02, 0x20, 0x00, 0, 0, 0, 0,
    ];

    fn syn_with_checksums() -> Vec<u8> {
        let mut f = SYN.to_vec();
        let ip = checksum(0, &f[14..34]);
        f[24..26].copy_from_slice(&ip.to_be_bytes());
        let mut pseudo = 0u32;
        for i in (26..34).step_by(2) {
            pseudo += u32::from(u16::from_be_bytes([f[i], f[i + 1]]));
        }
        pseudo += 6 + 20;
        let tcp = checksum(pseudo, &f[34..54]);
        f[50..52].copy_from_slice(&tcp.to_be_bytes());
        f
    }

    #[test]
    fn decodes_a_tcp_syn() {
        let f = dissect(&syn_with_checksums());
        assert_eq!(get(&f, "eth.dst"), "02:00:00:00:00:01");
        assert_eq!(get(&f, "ipv4.dst"), "198.18.0.10");
        assert_eq!(get(&f, "ipv4.ttl"), "64");
        assert_eq!(get(&f, "tcp.sport"), "40000");
        assert_eq!(get(&f, "tcp.flags"), "SYN");
        assert!(get(&f, "ipv4.checksum").ends_with("(valid)"));
        assert!(get(&f, "tcp.checksum").ends_with("(valid)"));
    }

    #[test]
    fn known_checksum_values() {
        // RFC 1071's worked example: 0001 f203 f4f5 f6f7 sums to ddf2, so the
        // checksum is its complement 220d.
        assert_eq!(
            checksum(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
    }

    #[test]
    fn bad_checksum_is_flagged() {
        let mut frame = syn_with_checksums();
        frame[22] = 63; // TTL changed without fixing the checksum
        assert!(get(&dissect(&frame), "ipv4.checksum").ends_with("(BAD)"));
    }

    #[test]
    fn never_panics_on_any_prefix() {
        let frame = syn_with_checksums();
        for n in 0..frame.len() {
            let f = dissect(&frame[..n]);
            assert_eq!(get(&f, "frame.len"), n.to_string());
        }
        for b in 0..=255u8 {
            let mut f = frame.clone();
            f[14] = b; // every version/IHL
            f[46] = b; // every TCP data offset
            dissect(&f);
        }
    }
}
