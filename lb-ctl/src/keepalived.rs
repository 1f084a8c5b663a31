//! `lb-ctl import keepalived FILE`: a keepalived.conf's virtual servers as
//! our services (TOML, as `lb-ctl apply -f` and the dataplane's file take
//! them), and every line that could not be translated, with why.
//!
//! What is translated: `virtual_server IP PORT`, `virtual_server fwmark N`
//! and `virtual_server group NAME` (one service per entry of the
//! `virtual_server_group`, address ranges `10.0.0.1-4` expanded), with
//! `lb_algo`, `lb_kind` (DR, NAT, TUN, and DPVS's FNAT with its
//! `laddr_group_name` / `local_address_group`), `protocol`,
//! `persistence_timeout`, `persistence_granularity`, the scheduler flags
//! (`sh-port`, `sh-fallback`, `mh-port`, `mh-fallback`), `delay_loop`, and
//! each `real_server`'s `weight`, `inhibit_on_failure`, `uthreshold`,
//! `lthreshold` and its `TCP_CHECK` or `HTTP_GET`. Health checks are a
//! service's here and a real server's in keepalived: the first real
//! server's check is the service's, and a real server whose check differs
//! is reported. `vrrp_*`, `global_defs` and the like stay keepalived's and
//! are skipped without a word; anything else is reported.

use std::fmt::Write;
use std::net::IpAddr;

/// A statement: its words, its line, and its block if it opens one.
#[derive(Debug, Clone)]
struct Node {
    words: Vec<String>,
    line: usize,
    block: Option<Vec<Node>>,
}

impl Node {
    fn key(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }

    fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }

    fn children(&self) -> &[Node] {
        self.block.as_deref().unwrap_or_default()
    }

    fn text(&self) -> String {
        let mut t = self.words.join(" ");
        if self.block.is_some() {
            t.push_str(" { ... }");
        }
        t
    }
}

/// What the translation gives: the TOML, and the lines left behind.
#[derive(Debug, Default)]
pub struct Translation {
    pub toml: String,
    pub services: usize,
    pub skipped: Vec<String>,
}

/// Splits a line into words: `#` and `!` start a comment, braces are words
/// of their own, double quotes keep spaces.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in line.chars() {
        match ch {
            '"' => quoted = !quoted,
            _ if quoted => cur.push(ch),
            '#' | '!' => break,
            '{' | '}' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(ch.to_string());
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The statements of `text`, nested by their braces.
fn parse(text: &str) -> Result<Vec<Node>, String> {
    // The open blocks: each holds its header and what it has so far.
    let mut stack: Vec<(Vec<String>, usize, Vec<Node>)> = vec![(Vec::new(), 0, Vec::new())];
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let mut pending = Vec::new();
        for w in words(line) {
            match w.as_str() {
                "{" => stack.push((std::mem::take(&mut pending), n, Vec::new())),
                "}" => {
                    let top = stack.last_mut().expect("the root is never popped");
                    if !pending.is_empty() {
                        top.2.push(Node {
                            words: std::mem::take(&mut pending),
                            line: n,
                            block: None,
                        });
                    }
                    if stack.len() == 1 {
                        return Err(format!("line {n}: `}}` closes no block"));
                    }
                    let (words, line, block) = stack.pop().expect("checked above");
                    stack.last_mut().expect("the root stays").2.push(Node {
                        words,
                        line,
                        block: Some(block),
                    });
                }
                _ => pending.push(w),
            }
        }
        if !pending.is_empty() {
            stack.last_mut().expect("the root stays").2.push(Node {
                words: pending,
                line: n,
                block: None,
            });
        }
    }
    if stack.len() > 1 {
        let (words, line, _) = &stack[stack.len() - 1];
        return Err(format!(
            "line {line}: `{} {{` is never closed",
            words.join(" ")
        ));
    }
    Ok(stack.pop().map(|(_, _, b)| b).unwrap_or_default())
}

/// keepalived's blocks that are none of ours.
const KEEPALIVED_ONLY: [&str; 9] = [
    "global_defs",
    "vrrp_instance",
    "vrrp_sync_group",
    "vrrp_script",
    "vrrp_track_process",
    "static_ipaddress",
    "static_routes",
    "static_rules",
    "linkbeat_interfaces",
];

/// A virtual server's address: an address and port, or a mark.
#[derive(Debug, Clone, PartialEq)]
enum Vip {
    Addr(IpAddr, u16),
    Mark(u32),
}

/// `10.0.0.1-4` (the last byte, or group, ranging) or one address.
fn addresses(text: &str) -> Option<Vec<IpAddr>> {
    if let Ok(a) = text.parse::<IpAddr>() {
        return Some(vec![a]);
    }
    let (first, last) = text.rsplit_once('-')?;
    match first.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => {
            let last: u8 = last.parse().ok()?;
            let o = a.octets();
            (o[3] <= last).then(|| {
                (o[3]..=last)
                    .map(|b| IpAddr::from([o[0], o[1], o[2], b]))
                    .collect()
            })
        }
        IpAddr::V6(a) => {
            let last = u16::from_str_radix(last, 16).ok()?;
            let s = a.segments();
            (s[7] <= last).then(|| {
                (s[7]..=last)
                    .map(|g| {
                        let mut t = s;
                        t[7] = g;
                        IpAddr::from(t)
                    })
                    .collect()
            })
        }
    }
}

/// A netmask (`255.255.255.0`, `ffff:ffff::`) or a prefix length, as one.
fn prefix_len(text: &str) -> Option<u8> {
    if let Ok(n) = text.parse::<u8>() {
        return Some(n);
    }
    let bits: u128 = match text.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        IpAddr::V6(a) => u128::from(a),
    };
    let len = bits.leading_ones();
    (bits.checked_shl(len).unwrap_or(0) == 0).then(|| u8::try_from(len).unwrap_or(128))
}

/// Why a virtual_server's keyword is not translated, where it is known.
fn unsupported(key: &str) -> &'static str {
    match key {
        "sorry_server" | "sorry_server_inhibit" | "sorry_server_lvs_method" => {
            "no sorry server here: with no healthy real server, new connections are dropped (drop_no_dest)"
        }
        "quorum" | "quorum_up" | "quorum_down" | "hysteresis" | "alpha" | "omega" => {
            "no quorum here: each real server is in or out on its own checks"
        }
        "virtualhost" => "health checks send no Host header here",
        "ha_suspend" => "checks run whether or not this director holds the VIP",
        "ops" => "no one-packet scheduling: each UDP flow keeps a session",
        "syn_proxy" => "no SYN proxy yet",
        "retry" | "delay_before_retry" => "belongs in a check",
        _ => "not translated",
    }
}

/// keepalived's checkers: `TCP_CHECK`, `HTTP_GET`, `SSL_GET`, `MISC_CHECK`...
fn is_check(key: &str) -> bool {
    key.ends_with("_CHECK") || key.ends_with("_GET")
}

fn quote(s: &str) -> String {
    format!("{s:?}")
}

struct Translator<'a> {
    groups: Vec<&'a Node>,
    laddr_groups: Vec<&'a Node>,
    out: Translation,
}

impl<'a> Translator<'a> {
    fn skip(&mut self, n: &Node, why: &str) {
        self.out
            .skipped
            .push(format!("line {}: `{}`: {why}", n.line, n.text()));
    }

    fn group(&self, kind: &[&'a Node], name: &str) -> Option<&'a Node> {
        kind.iter()
            .copied()
            .find(|g| g.arg(1) == Some(name) && g.block.is_some())
    }

    /// The virtual servers a `virtual_server` header names.
    fn vips(&mut self, vs: &'a Node) -> Vec<Vip> {
        match (vs.arg(1), vs.arg(2), vs.arg(3)) {
            (Some("fwmark"), Some(m), None) => match m.parse() {
                Ok(m) => vec![Vip::Mark(m)],
                Err(_) => {
                    self.skip(vs, "the mark is not a number");
                    Vec::new()
                }
            },
            (Some("group"), Some(name), None) => {
                let Some(g) = self.group(&self.groups, name) else {
                    self.skip(vs, "no virtual_server_group of that name");
                    return Vec::new();
                };
                let mut out = Vec::new();
                for e in g.children() {
                    match (e.arg(0), e.arg(1), e.words.len()) {
                        (Some("fwmark"), Some(m), 2) if m.parse::<u32>().is_ok() => {
                            out.push(Vip::Mark(m.parse().unwrap_or_default()));
                        }
                        (Some(a), Some(p), 2) => match (addresses(a), p.parse::<u16>()) {
                            (Some(list), Ok(port)) => {
                                out.extend(list.into_iter().map(|a| Vip::Addr(a, port)));
                            }
                            _ => self.skip(e, "not an address (or range) and a port"),
                        },
                        _ => self.skip(e, "not an address (or range) and a port, or fwmark N"),
                    }
                }
                out
            }
            (Some(a), Some(p), None) => match (a.parse::<IpAddr>(), p.parse::<u16>()) {
                (Ok(a), Ok(p)) => vec![Vip::Addr(a, p)],
                _ => {
                    self.skip(vs, "not an address and a port");
                    Vec::new()
                }
            },
            _ => {
                self.skip(
                    vs,
                    "expected `virtual_server IP PORT`, `fwmark N` or `group NAME`",
                );
                Vec::new()
            }
        }
    }

    /// A real server's check as `[service.health]` lines, or why not.
    fn check(&mut self, rs: &Node, delay_loop: u32, inhibit: bool) -> Option<String> {
        let checks: Vec<&Node> = rs
            .children()
            .iter()
            .filter(|c| c.block.is_some() && is_check(c.key()))
            .collect();
        let c = *checks.first()?;
        for extra in &checks[1..] {
            self.skip(extra, "one check per service here: the first is kept");
        }
        let kind = match c.key() {
            "TCP_CHECK" => "kind = \"tcp\"\n".to_owned(),
            "HTTP_GET" => {
                let urls: Vec<&Node> = c.children().iter().filter(|u| u.key() == "url").collect();
                let (mut path, mut expect) = ("/".to_owned(), 200u16);
                if let Some(u) = urls.first() {
                    for k in u.children() {
                        match (k.key(), k.arg(1)) {
                            ("path", Some(p)) => path = p.to_owned(),
                            ("status_code", Some(s)) => match s.parse() {
                                Ok(s) => expect = s,
                                Err(_) => self.skip(k, "one status code is checked here"),
                            },
                            _ => self.skip(k, "only the path and the status code are checked here"),
                        }
                    }
                }
                for u in urls.iter().skip(1) {
                    self.skip(u, "one URL per check here: the first is kept");
                }
                format!(
                    "kind = \"http\"\npath = {}\nexpect = {expect}\n",
                    quote(&path)
                )
            }
            _ => {
                self.skip(
                    c,
                    "not a check this dataplane runs (TCP_CHECK and HTTP_GET are)",
                );
                return None;
            }
        };
        let mut s = kind;
        let (mut timeout, mut retry) = (5u32, 1u32);
        for k in c.children() {
            match (k.key(), k.arg(1).map(str::parse::<u32>)) {
                ("url", _) => {}
                ("connect_port", Some(Ok(p))) => {
                    let _ = writeln!(s, "port = {p}");
                }
                ("connect_timeout", Some(Ok(t))) => timeout = t,
                ("retry" | "nb_get_retry", Some(Ok(r))) => retry = r,
                ("delay_before_retry", Some(Ok(_))) => {}
                _ => self.skip(k, "not translated"),
            }
        }
        let _ = writeln!(
            s,
            "interval_ms = {}\ntimeout_ms = {}\nrise = 1\nfall = {}\non_failure = {}",
            delay_loop.saturating_mul(1000),
            timeout.saturating_mul(1000),
            retry.saturating_add(1),
            if inhibit { "\"quiesce\"" } else { "\"remove\"" }
        );
        Some(s)
    }

    fn virtual_server(&mut self, vs: &'a Node) {
        let vips = self.vips(vs);
        let mut sched = "wlc".to_owned();
        let mut mode = "nat";
        let mut proto = "tcp";
        let mut flags = Vec::new();
        let mut persistence = None;
        let mut netmask = None;
        let mut laddrs = Vec::new();
        let mut delay_loop = 60u32;
        let mut reals = Vec::new();
        for k in vs.children() {
            match (k.key(), k.arg(1)) {
                ("lb_algo", Some(a)) => match a {
                    "rr" | "wrr" | "lc" | "wlc" | "sed" | "nq" | "dh" | "sh" | "lblc"
                    | "lblcr" | "mh" | "fo" => sched = a.to_owned(),
                    _ => self.skip(k, "not a scheduler here (rr wrr lc wlc sed nq dh sh lblc lblcr mh fo); wlc is used"),
                },
                ("lb_kind", Some(m)) => match m.to_ascii_uppercase().as_str() {
                    "DR" => mode = "dr",
                    "NAT" => mode = "nat",
                    "TUN" => mode = "tun",
                    "FNAT" => mode = "fnat",
                    _ => self.skip(k, "not a forwarding mode here (DR, NAT, TUN, FNAT); NAT is used"),
                },
                ("protocol", Some(p)) => match p.to_ascii_uppercase().as_str() {
                    "TCP" => proto = "tcp",
                    "UDP" => proto = "udp",
                    _ => self.skip(k, "TCP and UDP are balanced here"),
                },
                ("persistence_timeout", p) => match p.map_or(Ok(360), str::parse::<u32>) {
                    Ok(p) => persistence = Some(p),
                    Err(_) => self.skip(k, "not a number of seconds"),
                },
                ("persistence_granularity", Some(m)) => match prefix_len(m) {
                    Some(len) => netmask = Some(len),
                    None => self.skip(k, "not a netmask"),
                },
                ("sh-port" | "sh-fallback" | "mh-port" | "mh-fallback", None) => {
                    flags.push(k.key().to_owned());
                }
                ("delay_loop", Some(d)) => match d.parse() {
                    Ok(d) => delay_loop = d,
                    Err(_) => self.skip(k, "not a number of seconds"),
                },
                ("laddr_group_name", Some(name)) => match self.group(&self.laddr_groups, name) {
                    Some(g) => {
                        for e in g.children() {
                            match e.arg(0).and_then(addresses) {
                                Some(list) => laddrs.extend(list),
                                None => self.skip(e, "not a local address"),
                            }
                        }
                    }
                    None => self.skip(k, "no local_address_group of that name"),
                },
                ("real_server", _) if k.block.is_some() || k.words.len() == 3 => reals.push(k),
                (key, _) => self.skip(k, unsupported(key)),
            }
        }
        if vips.is_empty() {
            return;
        }
        let mut health: Option<(String, usize)> = None;
        let mut real_lines = String::new();
        for rs in &reals {
            let (Some(addr), Some(port)) = (
                rs.arg(1).and_then(|a| a.parse::<IpAddr>().ok()),
                rs.arg(2).and_then(|p| p.parse::<u16>().ok()),
            ) else {
                self.skip(rs, "not an address and a port");
                continue;
            };
            let _ = writeln!(
                real_lines,
                "\n[[service.real]]\naddress = {}",
                quote(&addr.to_string())
            );
            if port != 0 {
                let _ = writeln!(real_lines, "port = {port}");
            }
            let _ = writeln!(real_lines, "mode = {}", quote(mode));
            let mut inhibit = false;
            for k in rs.children() {
                match (k.key(), k.arg(1).map(str::parse::<u32>)) {
                    ("weight", Some(Ok(w))) => {
                        let _ = writeln!(real_lines, "weight = {w}");
                    }
                    ("uthreshold", Some(Ok(u))) => {
                        let _ = writeln!(real_lines, "upper = {u}");
                    }
                    ("lthreshold", Some(Ok(l))) => {
                        let _ = writeln!(real_lines, "lower = {l}");
                    }
                    ("inhibit_on_failure", None) => inhibit = true,
                    (key, _) if k.block.is_some() && is_check(key) => {}
                    _ => self.skip(k, "not translated"),
                }
            }
            match (self.check(rs, delay_loop, inhibit), &health) {
                (Some(h), None) => health = Some((h, rs.line)),
                (Some(h), Some((first, line))) if h != *first => self.skip(
                    rs,
                    &format!(
                        "its check differs from the one of line {line}, which the service keeps"
                    ),
                ),
                _ => {}
            }
        }
        for vip in vips {
            let mut s = String::new();
            let _ = writeln!(s, "\n# keepalived.conf line {}", vs.line);
            let _ = writeln!(s, "[[service]]");
            match vip {
                Vip::Addr(a, p) => {
                    let _ = writeln!(
                        s,
                        "protocol = {}\nvip = {}\nport = {p}",
                        quote(proto),
                        quote(&a.to_string())
                    );
                }
                Vip::Mark(m) => {
                    // keepalived leaves the marking to iptables; here the
                    // service says what it takes, which the file cannot.
                    let _ = writeln!(
                        s,
                        "fwmark = {m}\n# match = [\"{proto}:<vip>/32:<ports>\"]   # what iptables marked {m}: add it before applying"
                    );
                }
            }
            let _ = writeln!(s, "scheduler = {}", quote(&sched));
            if !flags.is_empty() {
                let _ = writeln!(s, "flags = {}", quote(&flags.join(",")));
            }
            if let Some(p) = persistence {
                let _ = writeln!(s, "persistence = {p}");
                if let Some(n) = netmask {
                    let _ = writeln!(s, "netmask = {n}");
                }
            }
            if mode == "fnat" {
                let l: Vec<String> = laddrs.iter().map(|a| quote(&a.to_string())).collect();
                let _ = writeln!(s, "local_addresses = [{}]", l.join(", "));
            }
            if let Some((h, _)) = &health {
                let _ = write!(s, "\n[service.health]\n{h}");
            }
            s.push_str(&real_lines);
            self.out.toml.push_str(&s);
            self.out.services += 1;
        }
    }
}

/// Translates a keepalived.conf (its text).
pub fn translate(text: &str) -> Result<Translation, String> {
    let nodes = parse(text)?;
    let mut t = Translator {
        groups: nodes
            .iter()
            .filter(|n| n.key() == "virtual_server_group")
            .collect(),
        laddr_groups: nodes
            .iter()
            .filter(|n| n.key() == "local_address_group")
            .collect(),
        out: Translation::default(),
    };
    t.out.toml.push_str(
        "# Translated from keepalived.conf by `lb-ctl import keepalived`: the\n# virtual servers; keepalived keeps its vrrp_instance blocks.\n",
    );
    for n in &nodes {
        match n.key() {
            "virtual_server" if n.block.is_some() => t.virtual_server(n),
            "virtual_server_group" | "local_address_group" => {}
            k if KEEPALIVED_ONLY.contains(&k) || k.starts_with("vrrp_") => {}
            "include" => t.skip(n, "included files are not read: import each of them"),
            _ => t.skip(n, "not translated"),
        }
    }
    Ok(t.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_nest_by_their_braces_whatever_the_layout() {
        let nodes =
            parse("a 1 # comment\nb { c 2 } ! another\nd \"x y\" {\n e {\n f\n }\n}\n").unwrap();
        let keys: Vec<&str> = nodes.iter().map(Node::key).collect();
        assert_eq!(keys, ["a", "b", "d"]);
        assert_eq!(nodes[1].children()[0].words, ["c", "2"]);
        assert_eq!(nodes[2].words, ["d", "x y"]);
        assert_eq!(nodes[2].children()[0].children()[0].key(), "f");
        assert_eq!(nodes[2].children()[0].children()[0].line, 5);
        assert!(parse("a {\n b\n").unwrap_err().contains("line 1"));
        assert!(parse("}\n").unwrap_err().contains("closes no block"));
    }

    #[test]
    fn ranges_and_netmasks_read_as_keepalived_writes_them() {
        assert_eq!(addresses("10.0.0.1-3").unwrap().len(), 3);
        assert_eq!(addresses("10.0.0.5").unwrap().len(), 1);
        assert!(addresses("10.0.0.5-2").is_none());
        assert_eq!(addresses("2001:db8::1-2").unwrap().len(), 2);
        assert_eq!(prefix_len("255.255.255.0"), Some(24));
        assert_eq!(prefix_len("ffff:ffff:ffff:ffff::"), Some(64));
        assert_eq!(prefix_len("24"), Some(24));
        assert_eq!(prefix_len("255.0.255.0"), None);
    }

    #[test]
    fn what_is_not_translated_is_named_with_its_line() {
        let t = translate(
            "virtual_server 198.18.0.1 80 {\n lb_algo ovf\n lb_kind DR\n quorum 2\n real_server 10.0.0.1 80 {\n  weight 1\n }\n}\ninclude /etc/keepalived/more.conf\nvrrp_instance V { state BACKUP }\n",
        )
        .unwrap();
        assert_eq!(t.services, 1);
        assert_eq!(t.skipped.len(), 3, "{:?}", t.skipped);
        assert!(
            t.skipped[0].starts_with("line 2: `lb_algo ovf`"),
            "{:?}",
            t.skipped
        );
        assert!(t.skipped[1].starts_with("line 4: `quorum 2`"));
        assert!(t.skipped[2].starts_with("line 9: `include"));
        assert!(t.toml.contains("scheduler = \"wlc\""));
        assert!(t.toml.contains("mode = \"dr\""));
    }
}
