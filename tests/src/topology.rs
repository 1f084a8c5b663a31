//! Network-namespace topologies for end-to-end tests, in the manner of the
//! kernel's IPVS selftest: a client, the load balancer and real servers,
//! each in a namespace of its own, joined by a bridge in a "switch"
//! namespace (one arm: the load balancer has one port).
//!
//! Addresses: the load balancer is 10.0.0.1/24 (and 10.9.0.1/24, the
//! clients' network), real server k is 10.0.0.1k, the client is 10.9.0.2
//! (routed through the load balancer, as NAT needs) or 10.0.0.2 on the
//! servers' network (as DR needs), and VIPs are in 198.18.0.0/15. Each real
//! server runs an HTTP server on port `port` that answers with its name and
//! the client address it saw. Everything is removed when the topology is
//! dropped, processes included.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::netns::Netns;

/// The HTTP server every real server runs: `<name> saw <peer address>`,
/// on IPv4 and IPv6 (one dual-stack socket; an IPv4 peer is shown as
/// itself, not as an IPv4-mapped IPv6 address).
const HTTP_SERVER: &str = r#"
import http.server, socket, socketserver, sys
name, port = sys.argv[1], int(sys.argv[2])
class S(http.server.HTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        peer = self.client_address[0]
        if peer.startswith('::ffff:'):
            peer = peer[7:]
        body = ('%s saw %s\n' % (name, peer)).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
socketserver.TCPServer.allow_reuse_address = True
S(('::', port), H).serve_forever()
"#;

/// Where the client sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientNet {
    /// 10.9.0.2/24, routed through the load balancer (NAT, Full-NAT).
    Routed,
    /// 10.0.0.2/24 on the servers' segment (DR: replies go straight back).
    SameSegment,
}

/// The IPIP decapsulator a TUN real server runs (the kernel here has no
/// ipip module): a raw socket receives IPIP packets, the inner packet is
/// written to a TUN device, and the kernel delivers it as if it had
/// arrived there. Replies leave through eth0, straight to the client.
const IPIP_DECAP: &str = r#"
import fcntl, os, socket, struct, sys
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454ca, 0x0001, 0x1000
tun = os.open('/dev/net/tun', os.O_RDWR)
fcntl.ioctl(tun, TUNSETIFF, struct.pack('16sH', b'tunl0', IFF_TUN | IFF_NO_PI))
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, 4)
count = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
n = 0
while True:
    pkt = raw.recv(65535)
    os.write(tun, pkt[(pkt[0] & 0x0f) * 4:])
    n += 1
    os.pwrite(count, b'%d\n' % n, 0)
"#;

/// How real servers are set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerSetup {
    /// Nothing special (Full-NAT).
    Plain,
    /// Default route through the load balancer (NAT).
    GatewayIsLb,
    /// The VIP on a loopback, arp_ignore=1, arp_announce=2 (DR).
    VipOnLoopback(&'static str),
    /// The VIP on a TUN device fed by a user-space IPIP decapsulator, with
    /// DR's ARP settings (TUN).
    IpipDecap(&'static str),
}

/// A running topology.
#[derive(Debug)]
pub struct OneArm {
    pub switch: Netns,
    pub lb: Netns,
    pub client: Netns,
    pub servers: Vec<Netns>,
    /// With [`two_arm`](OneArm::two_arm), the clients' router.
    pub router: Option<Netns>,
    servers_running: Vec<Child>,
    /// Per server, the file where its IPIP decapsulator counts packets.
    decap_counts: Vec<PathBuf>,
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Makes `ns` a TUN real server for `vip`: DR's ARP settings, reverse-path
/// filtering off (the decapsulated packets arrive on `tunl0` from a client
/// routed through `eth0`, as on any IPIP real server), and the user-space
/// decapsulator ([`IPIP_DECAP`]) counting packets in `counts`, with the VIP
/// on its TUN device. Returns the decapsulator.
pub(crate) fn ipip_decap(ns: &Netns, vip: &str, counts: &std::path::Path) -> io::Result<Child> {
    for (k, v) in [
        ("arp_ignore", "1"),
        ("arp_announce", "2"),
        ("rp_filter", "0"),
    ] {
        for dev in ["all", "eth0"] {
            run(ns
                .command("sysctl")
                .args(["-qw", &format!("net.ipv4.conf.{dev}.{k}={v}")]))?;
        }
    }
    let mut decap = ns
        .command("python3")
        .arg("-c")
        .arg(IPIP_DECAP)
        .arg(counts)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut up = false;
    for _ in 0..100 {
        if ns.ip(&["link", "set", "tunl0", "up"]).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !up {
        let _ = decap.kill();
        let _ = decap.wait();
        return Err(io::Error::other(
            "the IPIP decapsulator did not create its TUN device",
        ));
    }
    ns.ip(&["addr", "add", &format!("{vip}/32"), "dev", "tunl0"])?;
    run(ns
        .command("sysctl")
        .args(["-qw", "net.ipv4.conf.tunl0.rp_filter=0"]))?;
    Ok(decap)
}

impl OneArm {
    /// Builds the namespaces and links, and starts `servers` HTTP servers on
    /// `port`.
    pub fn new(
        tag: &str,
        servers: usize,
        port: u16,
        client: ClientNet,
        setup: ServerSetup,
    ) -> io::Result<OneArm> {
        let switch = Netns::new(&format!("{tag}sw"))?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let lb = Netns::new(&format!("{tag}lb"))?;
        let cl = Netns::new(&format!("{tag}cl"))?;
        let mut rs = Vec::new();
        for k in 0..servers {
            rs.push(Netns::new(&format!("{tag}rs{k}"))?);
        }
        let attach = |ns: &Netns, idx: usize| -> io::Result<()> {
            let peer = format!("p{idx}");
            run(Command::new("ip").args([
                "link",
                "add",
                "eth0",
                "netns",
                ns.name(),
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "netns",
                switch.name(),
            ]))?;
            switch.ip(&["link", "set", &peer, "master", "br0", "up"])?;
            ns.ip(&[
                "link",
                "set",
                "eth0",
                "address",
                &format!("02:00:00:00:00:{:02x}", idx + 1),
            ])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
            Ok(())
        };
        attach(&lb, 0)?;
        attach(&cl, 1)?;
        for (k, ns) in rs.iter().enumerate() {
            attach(ns, k + 2)?;
        }
        match client {
            ClientNet::Routed => {
                cl.ip(&["addr", "add", "10.9.0.2/24", "dev", "eth0"])?;
                cl.ip(&["route", "add", "default", "via", "10.9.0.1"])?;
            }
            ClientNet::SameSegment => {
                cl.ip(&["addr", "add", "10.0.0.2/24", "dev", "eth0"])?;
                cl.ip(&["route", "add", "198.18.0.0/15", "via", "10.0.0.1"])?;
            }
        }
        let mut running = Vec::new();
        let mut decap_counts = Vec::new();
        for (k, ns) in rs.iter().enumerate() {
            ns.ip(&["addr", "add", &format!("10.0.0.1{k}/24"), "dev", "eth0"])?;
            match setup {
                ServerSetup::Plain => {}
                ServerSetup::GatewayIsLb => {
                    ns.ip(&["route", "add", "default", "via", "10.0.0.1"])?;
                }
                ServerSetup::VipOnLoopback(vip) => {
                    ns.ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"])?;
                    for (k, v) in [("arp_ignore", "1"), ("arp_announce", "2")] {
                        for dev in ["all", "eth0"] {
                            run(ns
                                .command("sysctl")
                                .args(["-qw", &format!("net.ipv4.conf.{dev}.{k}={v}")]))?;
                        }
                    }
                }
                ServerSetup::IpipDecap(vip) => {
                    let counts = std::env::temp_dir().join(format!("lb-tests-{}.ipip", ns.name()));
                    running.push(ipip_decap(ns, vip, &counts)?);
                    decap_counts.push(counts);
                }
            }
            let child = ns
                .command("python3")
                .args(["-c", HTTP_SERVER, &format!("rs{k}"), &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            running.push(child);
        }
        let topo = OneArm {
            switch,
            lb,
            client: cl,
            servers: rs,
            router: None,
            servers_running: running,
            decap_counts,
        };
        for k in 0..servers {
            topo.wait_for_server(k, port)?;
        }
        Ok(topo)
    }

    /// The classic two-armed LVS-NAT director (`config/nat-two-arm.toml`):
    ///
    /// ```text
    /// client 10.9.0.2 -- 10.9.0.1 router 203.0.113.254 -- eth0 lb 203.0.113.1
    ///                                   lb eth1 10.0.0.1 -- br0 -- rs k 10.0.0.1k
    /// ```
    ///
    /// The router (a kernel router, default settings but forwarding) routes
    /// the VIPs (198.18.0.0/15) to 203.0.113.1; the real servers' default
    /// route is the load balancer, as NAT asks. Each server runs the HTTP
    /// server on `port`.
    pub fn two_arm(tag: &str, servers: usize, port: u16) -> io::Result<OneArm> {
        let switch = Netns::new(&format!("{tag}sw"))?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let lb = Netns::new(&format!("{tag}lb"))?;
        let router = Netns::new(&format!("{tag}rt"))?;
        let client = Netns::new(&format!("{tag}cl"))?;
        crate::routed::veth(&client, "eth0", &router, "ethc")?;
        client.ip(&["addr", "add", "10.9.0.2/24", "dev", "eth0"])?;
        client.ip(&["route", "add", "default", "via", "10.9.0.1"])?;
        router.ip(&["addr", "add", "10.9.0.1/24", "dev", "ethc"])?;
        crate::routed::veth(&router, "eth0", &lb, "eth0")?;
        router.ip(&["addr", "add", "203.0.113.254/24", "dev", "eth0"])?;
        router.ip(&["route", "add", "198.18.0.0/15", "via", "203.0.113.1"])?;
        run(router
            .command("sysctl")
            .args(["-qw", "net.ipv4.ip_forward=1"]))?;
        let mut rs = Vec::new();
        for k in 0..servers {
            rs.push(Netns::new(&format!("{tag}rs{k}"))?);
        }
        let on_bridge = std::iter::once((&lb, "eth1")).chain(rs.iter().map(|ns| (ns, "eth0")));
        for (k, (ns, dev)) in on_bridge.enumerate() {
            let peer = format!("p{k}");
            crate::routed::veth(ns, dev, &switch, &peer)?;
            switch.ip(&["link", "set", &peer, "master", "br0"])?;
        }
        let mut running = Vec::new();
        for (k, ns) in rs.iter().enumerate() {
            ns.ip(&["addr", "add", &format!("10.0.0.1{k}/24"), "dev", "eth0"])?;
            ns.ip(&["route", "add", "default", "via", "10.0.0.1"])?;
            running.push(
                ns.command("python3")
                    .args(["-c", HTTP_SERVER, &format!("rs{k}"), &port.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?,
            );
        }
        let topo = OneArm {
            switch,
            lb,
            client,
            servers: rs,
            router: Some(router),
            servers_running: running,
            decap_counts: Vec::new(),
        };
        topo.wait_for_servers(port)?;
        Ok(topo)
    }

    /// Gives the topology IPv6 addresses beside its IPv4 ones, in the same
    /// plan: the load balancer fd00::1/64 and fd09::1/64 (its port's
    /// configuration says so; the kernel in its namespace holds none),
    /// real server k fd00::1k, the client fd09::2 routed through the load
    /// balancer or fd00::2 on the servers' segment, and each real server
    /// set up as `setup` says for IPv6 VIPs. Waits until duplicate address
    /// detection has finished, as any host does before it uses an address.
    pub fn add_ipv6(&self, client: ClientNet, setup: ServerSetup) -> io::Result<()> {
        match client {
            ClientNet::Routed => {
                self.client
                    .ip(&["-6", "addr", "add", "fd09::2/64", "dev", "eth0"])?;
                self.client
                    .ip(&["-6", "route", "add", "default", "via", "fd09::1"])?;
            }
            ClientNet::SameSegment => {
                self.client
                    .ip(&["-6", "addr", "add", "fd00::2/64", "dev", "eth0"])?;
                self.client
                    .ip(&["-6", "route", "add", "fd18::/64", "via", "fd00::1"])?;
            }
        }
        for (k, ns) in self.servers.iter().enumerate() {
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("fd00::1{k}/64"),
                "dev",
                "eth0",
            ])?;
            match setup {
                ServerSetup::Plain => {}
                ServerSetup::GatewayIsLb => {
                    ns.ip(&["-6", "route", "add", "default", "via", "fd00::1"])?;
                }
                ServerSetup::VipOnLoopback(vip) => {
                    // A loopback address answers no Neighbor Solicitation
                    // on eth0, so IPv6 needs no ARP-like settings.
                    ns.ip(&["-6", "addr", "add", &format!("{vip}/128"), "dev", "lo"])?;
                }
                ServerSetup::IpipDecap(_) => {
                    return Err(io::Error::other("no IPv6 tunnel real servers in this kit"));
                }
            }
        }
        let hosts = std::iter::once(&self.client).chain(&self.servers);
        for ns in hosts {
            let mut settled = false;
            for _ in 0..100 {
                let out = ns
                    .command("ip")
                    .args(["-6", "addr", "show", "tentative"])
                    .output()?;
                if out.stdout.is_empty() {
                    settled = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !settled {
                return Err(io::Error::other(format!(
                    "{}: duplicate address detection did not finish in 5 s",
                    ns.name()
                )));
            }
        }
        Ok(())
    }

    fn wait_for_server(&self, k: usize, port: u16) -> io::Result<()> {
        for _ in 0..100 {
            let out = self.servers[k].command("ss").args(["-ltn"]).output()?;
            if String::from_utf8_lossy(&out.stdout).contains(&format!(":{port}")) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(io::Error::other(format!(
            "the HTTP server of rs{k} did not start"
        )))
    }

    /// Kills every process of real server `k` (its servers die).
    pub fn stop_server(&self, k: usize) -> io::Result<()> {
        let out = Command::new("ip")
            .args(["netns", "pids", self.servers[k].name()])
            .output()?;
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
        Ok(())
    }

    /// Starts real server `k`'s HTTP server again on `port`.
    pub fn start_server(&mut self, k: usize, port: u16) -> io::Result<()> {
        let child = self.servers[k]
            .command("python3")
            .args(["-c", HTTP_SERVER, &format!("rs{k}"), &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.servers_running.push(child);
        self.wait_for_server(k, port)
    }

    /// Starts `python3 -c code args...` in every real server's namespace
    /// (stopped with the topology).
    pub fn spawn_on_servers(&mut self, code: &str, args: &[&str]) -> io::Result<()> {
        for ns in &self.servers {
            let child = ns
                .command("python3")
                .arg("-c")
                .arg(code)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            self.servers_running.push(child);
        }
        Ok(())
    }

    /// With `ServerSetup::IpipDecap`, how many IPIP packets each real
    /// server's decapsulator has unwrapped so far.
    pub fn decapsulated(&self) -> Vec<u64> {
        self.decap_counts
            .iter()
            .map(|path| {
                std::fs::read_to_string(path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Waits until every real server listens on TCP `port`.
    pub fn wait_for_servers(&self, port: u16) -> io::Result<()> {
        (0..self.servers.len()).try_for_each(|k| self.wait_for_server(k, port))
    }

    /// One HTTP GET from the client, bounded in time; the body or an error.
    pub fn get(&self, url: &str) -> Result<String, String> {
        let out = self
            .client
            .command("curl")
            // -g: brackets are an IPv6 literal, not one of curl's globs.
            .args(["-g", "-s", "-S", "-m", "5", url])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl OneArm {
    /// Sends `n` requests to `url` from the client, each answer read;
    /// returns how many each server answered and how often each client
    /// address was seen by the servers. Panics on a failed request or an
    /// answer that is not the kit's server's.
    pub fn tally(&self, url: &str, n: usize) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
        let mut per_server = BTreeMap::new();
        let mut seen = BTreeMap::new();
        for i in 0..n {
            let body = self
                .get(url)
                .unwrap_or_else(|e| panic!("request {i} to {url} failed: {e}"));
            let mut words = body.split_whitespace();
            let (Some(server), Some("saw"), Some(peer)) =
                (words.next(), words.next(), words.next())
            else {
                panic!("unexpected answer {body:?}");
            };
            *per_server.entry(server.to_owned()).or_default() += 1;
            *seen.entry(peer.to_owned()).or_default() += 1;
        }
        (per_server, seen)
    }
}

impl Drop for OneArm {
    fn drop(&mut self) {
        for c in &mut self.servers_running {
            let _ = c.kill();
            let _ = c.wait();
        }
        for path in &self.decap_counts {
            let _ = std::fs::remove_file(path);
        }
    }
}
