//! The routed topology a new user builds by hand, with the kernel's
//! defaults everywhere (offloads on, as the kernel sets them): a client
//! behind a kernel router, and the load balancer and two real servers on a
//! Linux bridge.
//!
//! ```text
//! client 10.9.0.2 -- 10.9.0.1 router 10.0.0.254 -- br0 -- lb 10.0.0.1 (DPDK)
//!                                                     \-- rs0 10.0.0.10
//!                                                     \-- rs1 10.0.0.11
//!                                      (a director pair: \-- lb2 10.0.0.2
//!                                                     \-- rs2 10.0.0.12)
//! ```
//!
//! The router forwards the VIPs (198.18.0.0/15) to the load balancer. Each
//! real server answers HTTP on port 80 (`GET /`: its name and the peer it
//! saw; `GET /blob`: the topology's blob file; `POST /up`: stores the body
//! and answers its length) and echoes UDP on port 5353 with its name in
//! front. The kernel senders (client, router, servers) hand their segments
//! over veth with partial checksums and as TSO super-frames, as they do on
//! any Linux host. Everything is removed when the topology is dropped.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::netns::Netns;

/// The servers' program: HTTP on 80 and a UDP echo on 5353.
const SERVER: &str = r#"
import http.server, socket, socketserver, sys, threading
name, blob, upload = sys.argv[1], sys.argv[2], sys.argv[3]
def echo():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(('0.0.0.0', 5353))
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(name.encode() + b':' + data, peer)
threading.Thread(target=echo, daemon=True).start()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        if self.path == '/blob':
            body = open(blob, 'rb').read()
        else:
            body = ('%s saw %s\n' % (name, self.client_address[0])).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        left = int(self.headers['Content-Length'])
        with open(upload, 'wb') as f:
            while left:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    break
                f.write(chunk)
                left -= len(chunk)
        body = ('%s got %d\n' % (name, int(self.headers['Content-Length']) - left)).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
socketserver.TCPServer.allow_reuse_address = True
http.server.ThreadingHTTPServer(('0.0.0.0', 80), H).serve_forever()
"#;

/// The router's VLAN sub-interface, in user space (the kernel here has no
/// 8021q module): a TAP device `vlan<id>` whose frames leave `eth0` with
/// the 802.1Q tag, and whose tagged frames from `eth0` (the kernel moves
/// the tag into the packet's metadata, read back with PACKET_AUXDATA) are
/// written to the TAP untagged.
const VLAN_TAGGER: &str = r#"
import fcntl, os, socket, struct, sys, threading
vid = int(sys.argv[1])
TUNSETIFF, IFF_TAP, IFF_NO_PI = 0x400454ca, 0x0002, 0x1000
tap = os.open('/dev/net/tun', os.O_RDWR)
fcntl.ioctl(tap, TUNSETIFF, struct.pack('16sH', b'vlan%d' % vid, IFF_TAP | IFF_NO_PI))
raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
raw.setsockopt(263, 8, 1)  # SOL_PACKET, PACKET_AUXDATA
raw.bind(('eth0', 0))
tag = struct.pack('!HH', 0x8100, vid)
def out():
    while True:
        f = os.read(tap, 65535)
        raw.send(f[:12] + tag + f[12:])
threading.Thread(target=out, daemon=True).start()
while True:
    f, anc, _, addr = raw.recvmsg(65535, socket.CMSG_SPACE(20))
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    tci = None
    for level, kind, data in anc:
        if level == 263 and kind == 8:
            status, _, _, _, _, vtci, _ = struct.unpack('IIIHHHH', data[:20])
            if status & 0x10:
                tci = vtci
    if tci is None and f[12:14] == b'\x81\x00':
        tci = struct.unpack('!H', f[14:16])[0]
        f = f[:12] + f[16:]
    if tci is not None and tci & 0xfff == vid:
        os.write(tap, f)
"#;

/// A client's program (`python3 -c LONG_LIVED HOST SECS`): one HTTP/1.1
/// connection to HOST kept open: a request every 100 ms for `secs`
/// seconds, each line `<server> saw <client>`; it exits non-zero at the
/// first request that fails.
pub const LONG_LIVED: &str = r#"
import http.client, sys, time
c = http.client.HTTPConnection(sys.argv[1], 80, timeout=15)
end = time.time() + float(sys.argv[2])
while time.time() < end:
    c.request('GET', '/')
    print(c.getresponse().read().decode().strip(), flush=True)
    time.sleep(0.1)
"#;

/// The start of a director's configuration in a two-director topology:
/// its data port (`eth0`, by net_af_packet) with the DIP, the exception
/// TAP `lbtap` with MAC `mac` (the data port's, so what the kernel sends
/// leaves as the port's own) carrying the DIP too, the router as the
/// default gateway; `sessions` and `exception` add lines to those tables.
/// The caller adds the rest (`[sync]`, services).
pub fn director_config(dip: &str, mac: &str, sessions: &str, exception: &str) -> String {
    format!(
        r#"
[eal]
args = ["--no-huge", "--no-shconf", "-m", "512", "--no-pci", "--log-level=lib.eal:warning",
        "--vdev=net_af_packet0,iface=eth0", "--vdev=net_tap0,iface=lbtap,mac={mac}"]
[workers]
lcores = [1]
[sessions]
capacity = 65536
{sessions}
[[port]]
name = "net_af_packet0"
addresses = ["{dip}/24"]
[[port]]
name = "net_tap0"
[[route]]
prefix = "0.0.0.0/0"
port = "net_af_packet0"
gateway = "10.0.0.254"
[exception]
port = "net_tap0"
interface = "lbtap"
addresses = ["{dip}/24"]
{exception}
"#
    )
}

/// How the real servers are set up for a forwarding mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reals {
    /// Full-NAT: nothing special; replies go to the local address.
    Plain,
    /// NAT: the default route points at the load balancer.
    GatewayIsLb,
    /// DR: the VIP on the loopback with arp_ignore=1 and arp_announce=2,
    /// replies straight back through the router.
    VipOnLoopback(&'static str),
    /// TUN: the VIP on a TUN device fed by the kit's user-space IPIP
    /// decapsulator (see `topology::ServerSetup::IpipDecap`), DR's ARP
    /// settings, replies straight back through the router.
    IpipDecap(&'static str),
}

/// How the router of a two-director topology reaches the VIPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VipRoute {
    /// On its segment: it asks ARP who holds them (VRRP).
    OnLink,
    /// Not at all until a routing protocol tells it (BGP).
    Learned,
}

/// A running routed topology.
#[derive(Debug)]
pub struct Routed {
    pub switch: Netns,
    pub router: Netns,
    pub lb: Netns,
    /// With [`with_two_directors`](Routed::with_two_directors): the second
    /// director, 10.0.0.2.
    pub lb2: Option<Netns>,
    pub client: Netns,
    pub servers: Vec<Netns>,
    running: Vec<Child>,
    dir: PathBuf,
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

/// A veth pair, `a_name` in `a` and `b_name` in `b`, both up.
pub(crate) fn veth(a: &Netns, a_name: &str, b: &Netns, b_name: &str) -> io::Result<()> {
    run(Command::new("ip").args([
        "link",
        "add",
        a_name,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        b.name(),
    ]))?;
    a.ip(&["link", "set", a_name, "up"])?;
    b.ip(&["link", "set", b_name, "up"])?;
    Ok(())
}

/// A deterministic blob of `len` bytes (xorshift), so a transfer that
/// loses, reorders or corrupts any byte shows in a comparison.
pub fn blob(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

impl Routed {
    /// Builds the namespaces, links and routes, writes a blob of
    /// `blob_len` bytes and starts both servers.
    pub fn new(tag: &str, reals: Reals, blob_len: usize) -> io::Result<Routed> {
        Routed::build(tag, reals, blob_len, None, None)
    }

    /// [`new`](Self::new), with a second director (`lb2`, 10.0.0.2 when
    /// its dataplane runs) on the bridge and a third real server (rs2,
    /// 10.0.0.12), as an LVS pair made highly available with VRRP: the router reaches the VIPs (198.18.0.0/15)
    /// on its segment, asking ARP who holds them, instead of through
    /// 10.0.0.1.
    pub fn with_two_directors(tag: &str, reals: Reals, blob_len: usize) -> io::Result<Routed> {
        Routed::build(tag, reals, blob_len, None, Some(VipRoute::OnLink))
    }

    /// Two directors as [`with_two_directors`](Self::with_two_directors),
    /// but the router has no route to the VIPs of its own: it learns them
    /// (from the directors, over BGP) as a real router would.
    pub fn with_two_directors_routed(
        tag: &str,
        reals: Reals,
        blob_len: usize,
    ) -> io::Result<Routed> {
        Routed::build(tag, reals, blob_len, None, Some(VipRoute::Learned))
    }

    /// [`new`](Self::new), with the router reaching the load balancer over
    /// 802.1Q VLAN `vlan` on the same bridge: the router's `vlan<id>` (a
    /// user-space sub-interface of its `eth0`, see [`VLAN_TAGGER`]) is
    /// 10.100.0.254/24 and routes the VIPs to 10.100.0.1, the load
    /// balancer's VLAN address; the real servers stay untagged.
    pub fn with_client_vlan(
        tag: &str,
        reals: Reals,
        blob_len: usize,
        vlan: u16,
    ) -> io::Result<Routed> {
        Routed::build(tag, reals, blob_len, Some(vlan), None)
    }

    fn build(
        tag: &str,
        reals: Reals,
        blob_len: usize,
        vlan: Option<u16>,
        pair: Option<VipRoute>,
    ) -> io::Result<Routed> {
        let switch = Netns::new(&format!("{tag}sw"))?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let router = Netns::new(&format!("{tag}rt"))?;
        let lb = Netns::new(&format!("{tag}lb"))?;
        let client = Netns::new(&format!("{tag}cl"))?;
        // A director pair balances three servers, as the LVS pairs it
        // stands for do; one director, two.
        let count = if pair.is_some() { 3 } else { 2 };
        let servers = (0..count)
            .map(|k| Netns::new(&format!("{tag}rs{k}")))
            .collect::<io::Result<Vec<_>>>()?;
        let lb2 = if pair.is_some() {
            Some(Netns::new(&format!("{tag}lb2"))?)
        } else {
            None
        };
        veth(&client, "eth0", &router, "ethc")?;
        client.ip(&["addr", "add", "10.9.0.2/24", "dev", "eth0"])?;
        client.ip(&["route", "add", "default", "via", "10.9.0.1"])?;
        router.ip(&["addr", "add", "10.9.0.1/24", "dev", "ethc"])?;
        // MACs by place: the router 01, the director 02, the second
        // director 03 (if any), then the servers.
        let on_bridge = std::iter::once(&router)
            .chain(std::iter::once(&lb))
            .chain(lb2.iter())
            .chain(servers.iter());
        for (k, ns) in on_bridge.enumerate() {
            let port = format!("p{k}");
            veth(ns, "eth0", &switch, &port)?;
            switch.ip(&["link", "set", &port, "master", "br0"])?;
            ns.ip(&[
                "link",
                "set",
                "eth0",
                "address",
                &format!("02:00:00:00:01:{:02x}", k + 1),
            ])?;
        }
        router.ip(&["addr", "add", "10.0.0.254/24", "dev", "eth0"])?;
        let mut running = Vec::new();
        run(router
            .command("sysctl")
            .args(["-qw", "net.ipv4.ip_forward=1"]))?;
        match vlan {
            None if pair == Some(VipRoute::OnLink) => {
                router.ip(&["route", "add", "198.18.0.0/15", "dev", "eth0"])?;
            }
            None if pair == Some(VipRoute::Learned) => {}
            None => {
                router.ip(&["route", "add", "198.18.0.0/15", "via", "10.0.0.1"])?;
            }
            Some(id) => {
                let dev = format!("vlan{id}");
                let tagger = router
                    .command("python3")
                    .args(["-c", VLAN_TAGGER, &id.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?;
                running.push(tagger);
                let mut up = false;
                for _ in 0..100 {
                    if router.ip(&["link", "set", &dev, "up"]).is_ok() {
                        up = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                if !up {
                    return Err(io::Error::other("the VLAN tagger did not create its TAP"));
                }
                router.ip(&["addr", "add", "10.100.0.254/24", "dev", &dev])?;
                router.ip(&["route", "add", "198.18.0.0/15", "via", "10.100.0.1"])?;
            }
        }
        let dir = std::env::temp_dir().join(format!("lb-tests-{}", router.name()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("blob"), blob(blob_len))?;
        let mut topo = Routed {
            switch,
            router,
            lb,
            lb2,
            client,
            servers,
            running,
            dir,
        };
        for k in 0..topo.servers.len() {
            let ns = &topo.servers[k];
            ns.ip(&["addr", "add", &format!("10.0.0.1{k}/24"), "dev", "eth0"])?;
            match reals {
                Reals::Plain => {}
                Reals::GatewayIsLb => {
                    ns.ip(&["route", "add", "default", "via", "10.0.0.1"])?;
                }
                Reals::VipOnLoopback(vip) => {
                    ns.ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"])?;
                    // What DR asks of every real server (the LVS manual's
                    // ARP settings), not an adaptation to the product.
                    for (key, v) in [("arp_ignore", "1"), ("arp_announce", "2")] {
                        for dev in ["all", "eth0"] {
                            run(ns
                                .command("sysctl")
                                .args(["-qw", &format!("net.ipv4.conf.{dev}.{key}={v}")]))?;
                        }
                    }
                    ns.ip(&["route", "add", "default", "via", "10.0.0.254"])?;
                }
                Reals::IpipDecap(vip) => {
                    let decap = crate::topology::ipip_decap(
                        ns,
                        vip,
                        &topo.dir.join(format!("ipip-rs{k}")),
                    )?;
                    topo.running.push(decap);
                    ns.ip(&["route", "add", "default", "via", "10.0.0.254"])?;
                }
            }
            let child = ns
                .command("python3")
                .args(["-c", SERVER, &format!("rs{k}")])
                .arg(topo.dir.join("blob"))
                .arg(topo.upload_of(k))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            topo.running.push(child);
        }
        for k in 0..topo.servers.len() {
            topo.wait_for_server(k)?;
        }
        Ok(topo)
    }

    fn wait_for_server(&self, k: usize) -> io::Result<()> {
        for _ in 0..100 {
            let out = self.servers[k].command("ss").args(["-ltnu"]).output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains(":80 ") && text.contains(":5353 ") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(io::Error::other(format!(
            "the servers of rs{k} did not start"
        )))
    }

    /// With [`Reals::IpipDecap`], how many IPIP packets each server's
    /// decapsulator has unwrapped so far.
    pub fn decapsulated(&self) -> Vec<u64> {
        (0..self.servers.len())
            .map(|k| {
                std::fs::read_to_string(self.dir.join(format!("ipip-rs{k}")))
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }

    /// The blob every server serves at `GET /blob`.
    pub fn blob_path(&self) -> PathBuf {
        self.dir.join("blob")
    }

    /// Where server `k` stores what it was sent with `POST /up`.
    pub fn upload_of(&self, k: usize) -> PathBuf {
        self.dir.join(format!("up-rs{k}"))
    }

    /// A scratch file in the topology's directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Runs curl in the client with `args`, bounded to `secs`; its output
    /// or its error.
    pub fn curl(&self, secs: u32, args: &[&str]) -> Result<String, String> {
        let out = self
            .client
            .command("curl")
            .args(["-s", "-S", "-m", &secs.to_string()])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Sends `frame` (raw Ethernet bytes) out of the router's `eth0`, as is.
    pub fn inject(&self, frame: &[u8]) -> io::Result<()> {
        const SEND: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('eth0', 0))
s.send(bytes.fromhex(sys.argv[1]))
"#;
        let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
        run(self.router.command("python3").args(["-c", SEND, &hex]))
    }

    /// Sends `count` UDP datagrams from the client to `to` (one socket,
    /// one at a time) and returns the answers, in order; a lost one is an
    /// empty string.
    pub fn udp_exchange(&self, to: &str, count: usize) -> io::Result<Vec<String>> {
        const CLIENT: &str = r#"
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
for i in range(n):
    s.sendto(b'datagram %d' % i, (host, port))
    try:
        print(s.recv(65535).decode())
    except socket.timeout:
        print('')
"#;
        let (host, port) = to.rsplit_once(':').unwrap_or((to, "0"));
        let out = self
            .client
            .command("python3")
            .args(["-c", CLIENT, host, port, &count.to_string()])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    }
}

/// Whether two files hold the same bytes; the first differing offset
/// otherwise.
pub fn same_bytes(a: &Path, b: &Path) -> Result<(), String> {
    let x = std::fs::read(a).map_err(|e| format!("{}: {e}", a.display()))?;
    let y = std::fs::read(b).map_err(|e| format!("{}: {e}", b.display()))?;
    if x == y {
        return Ok(());
    }
    let at = x.iter().zip(&y).position(|(p, q)| p != q);
    Err(format!(
        "{} ({} bytes) and {} ({} bytes) differ at byte {}",
        a.display(),
        x.len(),
        b.display(),
        y.len(),
        at.unwrap_or(x.len().min(y.len()))
    ))
}

impl Drop for Routed {
    fn drop(&mut self) {
        for c in &mut self.running {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
