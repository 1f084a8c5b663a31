//! Listings in ipvsadm's formats (`ipvsadm -L -n` and its `--stats`,
//! `--rate`, `-c` and `-S` variants), column for column, so scripts that
//! read ipvsadm's output read ours.

use std::fmt::Write;

use lb_admin_proto::{Connections, List, ServiceInfo};

/// ipvsadm's `print_largenum`: right-aligned in 9 columns, with K/M/G/T
/// above 100 million unless `exact`.
pub fn largenum(i: u64, exact: bool) -> String {
    if exact {
        let s = i.to_string();
        let width = if s.len() <= 8 { 9 } else { s.len() + 1 };
        return format!("{i:>width$}");
    }
    if i < 100_000_000 {
        format!("{i:>9}")
    } else if i < 1_000_000_000 {
        format!("{:>8}K", i / 1000)
    } else if i < 100_000_000_000 {
        format!("{:>8}M", i / 1_000_000)
    } else if i < 100_000_000_000_000 {
        format!("{:>8}G", i / 1_000_000_000)
    } else {
        format!("{:>8}T", i / 1_000_000_000_000)
    }
}

/// A rate as a whole number, truncated as ipvsadm shows it.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // saturating by Rust's float-to-int rules
fn whole(rate: f64) -> u64 {
    rate as u64
}

/// `addr:port`, IPv6 in brackets.
pub fn addr_port(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// A prefix length as ipvsadm shows a netmask (dotted for IPv4).
fn mask(len: u8, v6: bool) -> String {
    if v6 {
        return len.to_string();
    }
    let m: u32 = if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32))
    };
    std::net::Ipv4Addr::from(m).to_string()
}

/// Which table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Plain,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
}

/// A service as ipvsadm names it in listings: `TCP  198.18.0.10:80`,
/// `FWM  1`.
fn listed_name(svc: &ServiceInfo) -> String {
    match svc.fwmark {
        Some(mark) if svc.vip.contains(':') => format!("FWM  {mark} IPv6"),
        Some(mark) => format!("FWM  {mark}"),
        None => format!("{}  {}", svc.protocol, addr_port(&svc.vip, svc.port)),
    }
}

/// Services sorted as ipvsadm sorts them: protocol, address, port; real
/// servers by address and port.
pub fn sorted(list: &List) -> Vec<ServiceInfo> {
    let ip = |a: &str| {
        a.parse::<std::net::IpAddr>()
            .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]))
    };
    let mut services = list.services.clone();
    services.sort_by_key(|v| (v.protocol.clone(), v.fwmark, ip(&v.vip), v.port));
    for svc in &mut services {
        svc.reals.sort_by_key(|r| (ip(&r.address), r.port));
    }
    services
}

/// `ipvsadm -L -n` and variants.
pub fn listing(list: &List, table: Table, exact: bool) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "IP Virtual Server version 1.2.1 (size=4096)");
    match table {
        Table::Stats => {
            let _ = writeln!(
                o,
                "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
                "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
            );
            let _ = writeln!(o, "  -> RemoteAddress:Port");
        }
        Table::Rate => {
            let _ = writeln!(
                o,
                "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
                "Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
            );
            let _ = writeln!(o, "  -> RemoteAddress:Port");
        }
        Table::Thresholds => {
            let _ = writeln!(
                o,
                "{:<33} {:<10} {:<10} {:<10} {:<10}",
                "Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
            );
            let _ = writeln!(o, "  -> RemoteAddress:Port");
        }
        Table::PersistentConn => {
            let _ = writeln!(
                o,
                "{:<33} {:<9} {:<11} {:<10} {:<10}",
                "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn"
            );
            let _ = writeln!(o, "  -> RemoteAddress:Port");
        }
        Table::Plain => {
            let _ = writeln!(o, "Prot LocalAddress:Port Scheduler Flags");
            let _ = writeln!(
                o,
                "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
            );
        }
    }
    for svc in sorted(list) {
        let vip = svc.vip.as_str();
        let name = listed_name(&svc);
        match table {
            Table::Stats => {
                let st = &svc.stats;
                let _ = write!(o, "{name:<33}");
                for n in [st.conns, st.in_pkts, st.out_pkts, st.in_bytes, st.out_bytes] {
                    o.push_str(&largenum(n, exact));
                }
                o.push('\n');
            }
            Table::Rate => {
                let r = &svc.rates;
                let _ = write!(o, "{name:<33}");
                for n in [r.cps, r.in_pps, r.out_pps, r.in_bps, r.out_bps] {
                    o.push_str(&largenum(whole(n), exact));
                }
                o.push('\n');
            }
            _ => {
                let _ = write!(o, "{name} {}", svc.scheduler);
                if !svc.flags.is_empty() {
                    let _ = write!(o, " ({})", svc.flags);
                }
                if let Some(p) = svc.persistence {
                    let _ = write!(o, " persistent {p}");
                    let v6 = vip.contains(':');
                    let full = if v6 { 128 } else { 32 };
                    let m = svc.netmask.unwrap_or(full);
                    if m != full {
                        let _ = write!(o, " mask {}", mask(m, v6));
                    }
                }
                // Not ipvsadm's: the lists' sizes, and whether this director
                // holds the VIP.
                if !svc.allow.is_empty() {
                    let _ = write!(o, " allow {}", svc.allow.len());
                }
                if !svc.deny.is_empty() {
                    let _ = write!(o, " deny {}", svc.deny.len());
                }
                if svc.standby {
                    o.push_str(" standby");
                }
                o.push('\n');
            }
        }
        for r in &svc.reals {
            let mut dname = addr_port(&r.address, r.port);
            if !vip.contains(':') {
                dname.truncate(28);
            }
            match table {
                Table::Stats => {
                    let st = &r.stats;
                    let _ = write!(o, "  -> {dname:<28}");
                    for n in [st.conns, st.in_pkts, st.out_pkts, st.in_bytes, st.out_bytes] {
                        o.push_str(&largenum(n, exact));
                    }
                    o.push('\n');
                }
                Table::Rate => {
                    let rt = &r.rates;
                    let _ = write!(
                        o,
                        "  -> {dname:<28} {:>8} {:>8} {:>8}",
                        whole(rt.cps),
                        whole(rt.in_pps),
                        whole(rt.out_pps)
                    );
                    o.push_str(&largenum(whole(rt.in_bps), exact));
                    o.push_str(&largenum(whole(rt.out_bps), exact));
                    o.push('\n');
                }
                Table::Thresholds => {
                    let _ = writeln!(
                        o,
                        "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}",
                        r.upper, r.lower, r.active, r.inactive
                    );
                }
                Table::PersistentConn => {
                    let _ = writeln!(
                        o,
                        "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}",
                        r.weight, r.persistent, r.active, r.inactive
                    );
                }
                Table::Plain => {
                    let _ = writeln!(
                        o,
                        "  -> {dname:<28} {:<7} {:<6} {:<10} {:<10}",
                        r.forward, r.weight, r.active, r.inactive
                    );
                }
            }
        }
    }
    o
}

fn proto_switch(p: &str) -> &'static str {
    if p.eq_ignore_ascii_case("udp") {
        "-u"
    } else {
        "-t"
    }
}

fn mode_switch(mode: &str) -> &'static str {
    match mode {
        "nat" => "-m",
        "tun" => "-i",
        "fnat" => "--fullnat",
        _ => "-g",
    }
}

/// `ipvsadm -S` (the rules, as ipvsadm-save writes them).
pub fn save(list: &List) -> String {
    let mut o = String::new();
    for svc in sorted(list) {
        let vip = svc.vip.as_str();
        let name = match svc.fwmark {
            Some(mark) => format!("-f {mark}"),
            None => format!(
                "{} {}",
                proto_switch(&svc.protocol),
                addr_port(vip, svc.port)
            ),
        };
        let _ = write!(o, "-A {name} -s {}", svc.scheduler);
        if !svc.flags.is_empty() {
            let _ = write!(o, " -b {}", svc.flags);
        }
        if let Some(p) = svc.persistence {
            let _ = write!(o, " -p {p}");
            let v6 = vip.contains(':');
            let full = if v6 { 128 } else { 32 };
            let m = svc.netmask.unwrap_or(full);
            if m != full {
                let _ = write!(o, " -M {}", mask(m, v6));
            }
        }
        // The traffic of a firewall-mark service: lb-ctl's own option,
        // where an LVS box has iptables rules.
        for m in &svc.matches {
            let _ = write!(o, " --match {m}");
        }
        // Its allow and deny lists, lb-ctl's own options too.
        for p in &svc.allow {
            let _ = write!(o, " --allow {p}");
        }
        for p in &svc.deny {
            let _ = write!(o, " --deny {p}");
        }
        o.push('\n');
        for l in &svc.local_addresses {
            let _ = writeln!(o, "-P {name} -z {l}");
        }
        for l in &svc.peer_local_addresses {
            let _ = writeln!(o, "-P {name} -z {l} --peer");
        }
        for r in &svc.reals {
            let _ = write!(
                o,
                "-a {name} -r {} {} -w {}",
                addr_port(&r.address, r.port),
                mode_switch(&r.mode),
                r.weight
            );
            if r.upper != 0 {
                let _ = write!(o, " -x {}", r.upper);
            }
            if r.lower != 0 {
                let _ = write!(o, " -y {}", r.lower);
            }
            o.push('\n');
        }
    }
    o
}

/// `ipvsadm -L -n -c`.
pub fn connections(conns: &Connections) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "IPVS connection entries");
    let _ = writeln!(
        o,
        "pro expire state       source             virtual            destination"
    );
    for c in &conns.connections {
        let e = c.expires_in;
        let _ = writeln!(
            o,
            "{:<3} {:02}:{:02}  {:<11} {:<18} {:<18} {}",
            c.protocol,
            e / 60,
            e % 60,
            c.state,
            c.client,
            c.virtual_,
            c.real
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largenum_like_ipvsadm() {
        assert_eq!(largenum(0, false), "        0");
        assert_eq!(largenum(99_999_999, false), " 99999999");
        assert_eq!(largenum(123_456_789, false), "  123456K");
        assert_eq!(largenum(12_345_678_901, false), "   12345M");
        assert_eq!(largenum(123_456_789, true), " 123456789");
        assert_eq!(largenum(5, true), "        5");
    }

    #[test]
    fn masks() {
        assert_eq!(mask(24, false), "255.255.255.0");
        assert_eq!(mask(0, false), "0.0.0.0");
        assert_eq!(mask(64, true), "64");
    }
}
