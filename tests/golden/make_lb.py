#!/usr/bin/python3
"""Builds the load-balancer golden cases with scapy (Debian's python3-scapy).

Run from this directory: `/usr/bin/python3 make_lb.py`. Each case's
expected output is written out by hand below, packet by packet, from what
the mode must do (see each case's README.md); scapy computes every checksum
from scratch, so the dataplane's incremental updates are checked against
independent values.
"""
from scapy.all import (ARP, ICMP, IP, TCP, UDP, Dot1AD, Dot1Q, Ether, ICMPv6EchoReply,
                       ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr,
                       ICMPv6NDOptSrcLLAddr, IPv6, Raw, in6_getnsma, in6_getnsmac, inet_pton,
                       inet_ntop, wrpcap)
import socket


LB = "02:70:63:61:70:00"      # net_pcap0's MAC
CLIENT = "02:00:00:00:01:02"
RS1 = "02:00:00:00:02:05"
RS2 = "02:00:00:00:02:06"
VIP = "198.18.0.10"
LIP = "10.0.0.100"
DIP = "10.0.0.1"


def stamp(pkts):
    for i, p in enumerate(pkts):
        p.time = 1700000000 + i / 1000
    return pkts


def garps(*ips):
    """The gratuitous ARPs the load balancer sends at start, before any
    traffic: one broadcast request per owned IPv4 address (interface
    addresses, VIPs, local addresses), sender and target both the address,
    in ascending order, on every port that has an IPv4 address."""
    order = sorted(ips, key=lambda ip: tuple(int(x) for x in ip.split(".")))
    return stamp([Ether(src=LB, dst="ff:ff:ff:ff:ff:ff") /
                  ARP(op=1, hwsrc=LB, psrc=ip, hwdst="00:00:00:00:00:00", pdst=ip) for ip in order])


def tcp(src_mac, dst_mac, src, dst, flags, seq, ack=0, payload=b"", ttl=64, mss=False):
    opts = [("MSS", 1460)] if mss else []
    (s, sp), (d, dp) = src, dst
    p = Ether(src=src_mac, dst=dst_mac) / IP(src=s, dst=d, ttl=ttl) / \
        TCP(sport=sp, dport=dp, flags=flags, seq=seq, ack=ack, window=8192, options=opts)
    return p / Raw(payload) if payload else p


def fnat_one_arm():
    c, v = ("10.0.0.2", 40000), (VIP, 80)
    l1, r1 = (LIP, 1025), ("10.0.0.5", 8080)
    c2, l2, r2 = ("10.0.0.2", 40001), (LIP, 1026), ("10.0.0.6", 8080)
    get = b"GET / HTTP/1.0\r\n\r\n"
    ok = b"HTTP/1.0 200 OK\r\n\r\nhello"
    ins, exp0, exp1 = [], [], []

    def both(inp, out):
        ins.append(inp)
        if out is not None:
            exp0.append(out)

    # The real server asks for the local address: the LB answers.
    both(Ether(src=RS1, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=RS1, psrc="10.0.0.5", pdst=LIP),
         Ether(src=LB, dst=RS1) / ARP(op=2, hwsrc=LB, psrc=LIP, hwdst=RS1, pdst="10.0.0.5"))
    # Handshake, data and close, both directions.
    both(tcp(CLIENT, LB, c, v, "S", 1000, mss=True), tcp(LB, RS1, l1, r1, "S", 1000, ttl=63, mss=True))
    both(tcp(RS1, LB, r1, l1, "SA", 5000, 1001), tcp(LB, CLIENT, v, c, "SA", 5000, 1001, ttl=63))
    both(tcp(CLIENT, LB, c, v, "A", 1001, 5001), tcp(LB, RS1, l1, r1, "A", 1001, 5001, ttl=63))
    both(tcp(CLIENT, LB, c, v, "PA", 1001, 5001, get), tcp(LB, RS1, l1, r1, "PA", 1001, 5001, get, ttl=63))
    both(tcp(RS1, LB, r1, l1, "PA", 5001, 1001 + len(get), ok), tcp(LB, CLIENT, v, c, "PA", 5001, 1001 + len(get), ok, ttl=63))
    both(tcp(CLIENT, LB, c, v, "FA", 1019, 5024), tcp(LB, RS1, l1, r1, "FA", 1019, 5024, ttl=63))
    both(tcp(RS1, LB, r1, l1, "FA", 5024, 1020), tcp(LB, CLIENT, v, c, "FA", 5024, 1020, ttl=63))
    both(tcp(CLIENT, LB, c, v, "A", 1020, 5025), tcp(LB, RS1, l1, r1, "A", 1020, 5025, ttl=63))
    # A second connection goes to the second real server (rr), next port.
    both(tcp(CLIENT, LB, c2, v, "S", 7000), tcp(LB, RS2, l2, r2, "S", 7000, ttl=63))
    # UDP: its own service, its own share of ports.
    both(Ether(src=CLIENT, dst=LB) / IP(src="10.0.0.2", dst=VIP) / UDP(sport=5000, dport=53) / Raw(b"query"),
         Ether(src=LB, dst=RS1) / IP(src=LIP, dst="10.0.0.5", ttl=63) / UDP(sport=1025, dport=5353) / Raw(b"query"))
    both(Ether(src=RS1, dst=LB) / IP(src="10.0.0.5", dst=LIP) / UDP(sport=5353, dport=1025) / Raw(b"answer"),
         Ether(src=LB, dst=CLIENT) / IP(src=VIP, dst="10.0.0.2", ttl=63) / UDP(sport=53, dport=5000) / Raw(b"answer"))
    # Ping the LB's address and the VIP.
    for target in (DIP, VIP):
        both(Ether(src=CLIENT, dst=LB) / IP(src="10.0.0.2", dst=target) / ICMP(type=8, id=7, seq=1) / Raw(b"ping"),
             Ether(src=LB, dst=CLIENT) / IP(src=target, dst="10.0.0.2", ttl=64) / ICMP(type=0, id=7, seq=1) / Raw(b"ping"))
    # SSH to the LB's own address: no service claims it, so to the kernel
    # (net_pcap1), unchanged.
    ssh = tcp(CLIENT, LB, ("10.0.0.2", 41000), (DIP, 22), "S", 1)
    ins.append(ssh)
    exp1.append(ssh)
    # Dropped, each with its counter: a truncated IPv4 header, a segment
    # other than SYN with no session, a frame for another MAC.
    ins.append(Ether(src=CLIENT, dst=LB, type=0x0800) / Raw(b"\x45\x00\x00"))
    ins.append(tcp(CLIENT, LB, ("10.0.0.2", 42000), v, "A", 1, 1))
    ins.append(tcp(CLIENT, "02:00:00:00:09:09", ("10.0.0.2", 42001), v, "S", 1))
    return stamp(ins), stamp(exp0), stamp(exp1)


def common(ins, exp0, exp1):
    """What every mode's case ends with, the same whatever the mode: ARP
    and ping answered, the kernel's traffic to the exception port, and
    three frames dropped, each with its counter."""
    ins.append(Ether(src=RS1, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=RS1, psrc="10.0.0.5", pdst=DIP))
    exp0.append(Ether(src=LB, dst=RS1) / ARP(op=2, hwsrc=LB, psrc=DIP, hwdst=RS1, pdst="10.0.0.5"))
    for target in (DIP, VIP):
        ins.append(Ether(src=CLIENT, dst=LB) / IP(src="10.0.0.2", dst=target) / ICMP(type=8, id=7, seq=1) / Raw(b"ping"))
        exp0.append(Ether(src=LB, dst=CLIENT) / IP(src=target, dst="10.0.0.2", ttl=64) / ICMP(type=0, id=7, seq=1) / Raw(b"ping"))
    ssh = tcp(CLIENT, LB, ("10.0.0.2", 41000), (DIP, 22), "S", 1)
    ins.append(ssh)
    exp1.append(ssh)
    ins.append(Ether(src=CLIENT, dst=LB, type=0x0800) / Raw(b"\x45\x00\x00"))
    ins.append(tcp(CLIENT, LB, ("10.0.0.2", 42000), (VIP, 80), "A", 1, 1))
    ins.append(tcp(CLIENT, "02:00:00:00:09:09", ("10.0.0.2", 42001), (VIP, 80), "S", 1))


def udp(src_mac, dst_mac, src, dst, payload, ttl=64):
    (s, sp), (d, dp) = src, dst
    return Ether(src=src_mac, dst=dst_mac) / IP(src=s, dst=d, ttl=ttl) / UDP(sport=sp, dport=dp) / Raw(payload)


def nat_one_arm():
    c, v, r1, r2 = ("10.0.0.2", 40000), (VIP, 80), ("10.0.0.5", 8080), ("10.0.0.6", 8080)
    c2 = ("10.0.0.2", 40001)
    ins, exp = [], []
    for inp, out in [
        # The destination becomes the real server's; TTL 63.
        (tcp(CLIENT, LB, c, v, "S", 1000, mss=True), tcp(LB, RS1, c, r1, "S", 1000, ttl=63, mss=True)),
        # The reply comes back to the LB (the real server's gateway) and
        # leaves from the VIP.
        (tcp(RS1, LB, r1, c, "SA", 5000, 1001), tcp(LB, CLIENT, v, c, "SA", 5000, 1001, ttl=63)),
        (tcp(CLIENT, LB, c, v, "PA", 1001, 5001, b"GET /"), tcp(LB, RS1, c, r1, "PA", 1001, 5001, b"GET /", ttl=63)),
        (tcp(RS1, LB, r1, c, "PA", 5001, 1006, b"hello"), tcp(LB, CLIENT, v, c, "PA", 5001, 1006, b"hello", ttl=63)),
        # rr: the next connection to the other server.
        (tcp(CLIENT, LB, c2, v, "S", 9000), tcp(LB, RS2, c2, r2, "S", 9000, ttl=63)),
        # The first one closes, both directions.
        (tcp(CLIENT, LB, c, v, "FA", 1006, 5006), tcp(LB, RS1, c, r1, "FA", 1006, 5006, ttl=63)),
        (tcp(RS1, LB, r1, c, "FA", 5006, 1007), tcp(LB, CLIENT, v, c, "FA", 5006, 1007, ttl=63)),
        (tcp(CLIENT, LB, c, v, "A", 1007, 5007), tcp(LB, RS1, c, r1, "A", 1007, 5007, ttl=63)),
        # UDP 53 to 10.0.0.5:5353, and the answer back from the VIP.
        (udp(CLIENT, LB, ("10.0.0.2", 5000), (VIP, 53), b"query"),
         udp(LB, RS1, ("10.0.0.2", 5000), ("10.0.0.5", 5353), b"query", ttl=63)),
        (udp(RS1, LB, ("10.0.0.5", 5353), ("10.0.0.2", 5000), b"answer"),
         udp(LB, CLIENT, (VIP, 53), ("10.0.0.2", 5000), b"answer", ttl=63)),
    ]:
        ins.append(inp)
        exp.append(out)
    exp1 = []
    common(ins, exp, exp1)
    return stamp(ins), stamp(exp), stamp(exp1)


def dr_one_arm():
    c, v = ("10.0.0.2", 40000), (VIP, 80)
    ins, exp = [], []
    for dst_mac, flags, seq, payload in [(RS1, "S", 1000, b""), (RS1, "A", 1001, b""), (RS1, "PA", 1001, b"GET /")]:
        ins.append(tcp(CLIENT, LB, c, v, flags, seq, 5001 if flags != "S" else 0, payload))
        # Only the MACs change: to the real server, from the LB. The IP
        # packet, TTL included, is untouched.
        exp.append(tcp(LB, dst_mac, c, v, flags, seq, 5001 if flags != "S" else 0, payload))
    ins.append(tcp(CLIENT, LB, ("10.0.0.2", 40001), v, "S", 7))
    exp.append(tcp(LB, RS2, ("10.0.0.2", 40001), v, "S", 7))
    # The client closes (the server's half never passes the LB).
    ins.append(tcp(CLIENT, LB, c, v, "FA", 1006, 5001))
    exp.append(tcp(LB, RS1, c, v, "FA", 1006, 5001))
    # UDP the same way: the datagram as it was, to the server's MAC.
    ins.append(udp(CLIENT, LB, ("10.0.0.2", 5000), (VIP, 53), b"query"))
    exp.append(udp(LB, RS1, ("10.0.0.2", 5000), (VIP, 53), b"query"))
    exp1 = []
    common(ins, exp, exp1)
    return stamp(ins), stamp(exp), stamp(exp1)


def tun_one_arm():
    c, v = ("10.0.0.2", 40000), (VIP, 80)
    ins, exp = [], []
    for ident, (rs_mac, rs, client, flags, seq) in enumerate([
        (RS1, "10.0.0.5", c, "S", 1000),
        (RS1, "10.0.0.5", c, "A", 1001),
        (RS2, "10.0.0.6", ("10.0.0.2", 40001), "S", 77),
        (RS1, "10.0.0.5", c, "FA", 1001),
        (RS1, "10.0.0.5", None, "udp", 0),
    ], start=1):
        if flags == "udp":
            inner = udp(CLIENT, LB, ("10.0.0.2", 5000), (VIP, 53), b"query")
        else:
            inner = tcp(CLIENT, LB, client, v, flags, seq, 5001 if "A" in flags else 0)
        ins.append(inner)
        # The client's IP packet, unchanged, inside an outer IPv4 header
        # from the LB's address to the real server: protocol 4, TTL and TOS
        # and DF copied from the inner header, IP ids counting from 1.
        exp.append(Ether(src=LB, dst=rs_mac) / IP(src=DIP, dst=rs, proto=4, ttl=64, id=ident) / inner[IP])
    exp1 = []
    common(ins, exp, exp1)
    return stamp(ins), stamp(exp), stamp(exp1)


def fold(x):
    while x >> 16:
        x = (x & 0xffff) + (x >> 16)
    return x


def partial(pkt):
    """`pkt` as a kernel sender hands it over veth with checksum offload on:
    the TCP or UDP checksum field holds only the folded pseudo-header sum
    (CHECKSUM_PARTIAL), for the device to finish."""
    p = pkt.copy()
    ip = p[IP]
    l4 = ip.payload
    length = len(bytes(l4))
    words = [int(x) for x in ip.src.split(".")] + [int(x) for x in ip.dst.split(".")]
    total = sum((words[i] << 8) | words[i + 1] for i in range(0, 8, 2)) + ip.proto + length
    l4.chksum = fold(total)
    return p


def shifted(pkt, layer):
    """`pkt` with a transport checksum that is wrong by one: what a one's
    complement update of it gives is the right checksum, wrong by one too."""
    p = pkt.__class__(bytes(pkt))
    right = p[layer].chksum
    p[layer].chksum = (~fold((~right & 0xffff) + 1)) & 0xffff
    return p


def fnat_wire():
    c, v = ("10.0.0.2", 40000), (VIP, 80)
    l1, r1 = (LIP, 1025), ("10.0.0.5", 8080)
    get = b"GET / HTTP/1.0\r\n\r\n"
    ins, exp0 = [], []
    # Partial checksums both ways (a kernel port): finished on the way.
    for inp, out in [
        (tcp(CLIENT, LB, c, v, "S", 1000, mss=True), tcp(LB, RS1, l1, r1, "S", 1000, ttl=63, mss=True)),
        (tcp(RS1, LB, r1, l1, "SA", 5000, 1001), tcp(LB, CLIENT, v, c, "SA", 5000, 1001, ttl=63)),
        (tcp(CLIENT, LB, c, v, "PA", 1001, 5001, get), tcp(LB, RS1, l1, r1, "PA", 1001, 5001, get, ttl=63)),
        (udp(CLIENT, LB, ("10.0.0.2", 5000), (VIP, 53), b"query"),
         udp(LB, RS1, (LIP, 1025), ("10.0.0.5", 5353), b"query", ttl=63)),
    ]:
        ins.append(partial(inp))
        exp0.append(out)
    # An established segment with a wrong checksum is not summed again:
    # it leaves rewritten, its checksum as wrong as it came.
    data = tcp(CLIENT, LB, c, v, "PA", 1019, 5001, b"more")
    ins.append(shifted(data, TCP))
    exp0.append(shifted(tcp(LB, RS1, l1, r1, "PA", 1019, 5001, b"more", ttl=63), TCP))
    # Dropped, each with its counter: SYN+RST and SYN+FIN (no session, not
    # forwarded), a SYN and a UDP query with wrong checksums (not partial),
    # and an IPv4 packet longer than its frame.
    ins.append(tcp(CLIENT, LB, ("10.0.0.2", 41001), v, "SR", 1))
    ins.append(tcp(CLIENT, LB, ("10.0.0.2", 41002), v, "SF", 1))
    ins.append(shifted(tcp(CLIENT, LB, ("10.0.0.2", 41003), v, "S", 1), TCP))
    ins.append(shifted(udp(CLIENT, LB, ("10.0.0.2", 5001), (VIP, 53), b"query"), UDP))
    long = bytes(tcp(CLIENT, LB, ("10.0.0.2", 41004), v, "PA", 1, 1, b"x" * 1400))
    ins.append(Ether(long[:114]))
    return stamp(ins), stamp(exp0)


def fnat_vlan():
    """Full-NAT with the client on VLAN 100 of the port and the real
    servers untagged: tags taken off on the way in and put back on the way
    out; a VLAN nobody configured and QinQ dropped."""
    client, vdip = "10.100.0.2", "10.100.0.1"
    c, v = (client, 40000), (VIP, 80)
    l1, r1 = (LIP, 1025), ("10.0.0.5", 8080)

    def tagged(p, vid=100):
        eth = p[Ether]
        return Ether(src=eth.src, dst=eth.dst) / Dot1Q(vlan=vid) / eth.payload

    ins, exp = [], []
    ins.append(tagged(Ether(src=CLIENT, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=CLIENT, psrc=client, pdst=vdip)))
    exp.append(tagged(Ether(src=LB, dst=CLIENT) / ARP(op=2, hwsrc=LB, psrc=vdip, hwdst=CLIENT, pdst=client)))
    ins.append(tagged(tcp(CLIENT, LB, c, v, "S", 1000, mss=True)))
    exp.append(tcp(LB, RS1, l1, r1, "S", 1000, ttl=63, mss=True))
    ins.append(tcp(RS1, LB, r1, l1, "SA", 5000, 1001))
    exp.append(tagged(tcp(LB, CLIENT, v, c, "SA", 5000, 1001, ttl=63)))
    ins.append(tagged(Ether(src=CLIENT, dst=LB) / IP(src=client, dst=vdip) / ICMP(type=8, id=7, seq=1) / Raw(b"ping")))
    exp.append(tagged(Ether(src=LB, dst=CLIENT) / IP(src=vdip, dst=client, ttl=64) / ICMP(type=0, id=7, seq=1) / Raw(b"ping")))
    ins.append(Ether(src=RS1, dst=LB) / IP(src="10.0.0.5", dst=DIP) / ICMP(type=8, id=8, seq=1) / Raw(b"ping"))
    exp.append(Ether(src=LB, dst=RS1) / IP(src=DIP, dst="10.0.0.5", ttl=64) / ICMP(type=0, id=8, seq=1) / Raw(b"ping"))
    # Dropped: VLAN 200 (nobody's), VLAN 300 inside VLAN 100, and an
    # 802.1ad outer tag.
    syn = tcp(CLIENT, LB, (client, 40001), v, "S", 1)
    ins.append(tagged(syn, 200))
    ins.append(Ether(src=CLIENT, dst=LB) / Dot1Q(vlan=100) / Dot1Q(vlan=300) / syn[IP])
    ins.append(Ether(src=CLIENT, dst=LB) / Dot1AD(vlan=100) / Dot1Q(vlan=300) / syn[IP])
    return stamp(ins), stamp(exp)


def solicited(target):
    """A target's solicited-node group and its MAC (RFC 4291, RFC 2464)."""
    group = inet_ntop(socket.AF_INET6, in6_getnsma(inet_pton(socket.AF_INET6, target)))
    return group, in6_getnsmac(inet_pton(socket.AF_INET6, group))


def ns(src_mac, src, target, hlim=255):
    group, mac = solicited(target)
    return Ether(src=src_mac, dst=mac) / IPv6(src=src, dst=group, hlim=hlim) / \
        ICMPv6ND_NS(tgt=target) / ICMPv6NDOptSrcLLAddr(lladdr=src_mac)


def na(src_mac, dst_mac, target, dst, flags):
    r, s_, o = flags
    return Ether(src=src_mac, dst=dst_mac) / IPv6(src=target, dst=dst, hlim=255) / \
        ICMPv6ND_NA(R=r, S=s_, O=o, tgt=target) / ICMPv6NDOptDstLLAddr(lladdr=src_mac)


def tcp6(src_mac, dst_mac, src, dst, flags, seq, ack=0, payload=b"", hlim=64):
    (s, sp), (d, dp) = src, dst
    p = Ether(src=src_mac, dst=dst_mac) / IPv6(src=s, dst=d, hlim=hlim) / \
        TCP(sport=sp, dport=dp, flags=flags, seq=seq, ack=ack, window=8192)
    return p / Raw(payload) if payload else p


def fnat6_one_arm():
    """Full-NAT over IPv6 with every neighbour found by Neighbor Discovery."""
    dip, lip, vip6 = "fd00::1", "fd00::100", "fd18::10"
    client, rs1, rs2 = "fd00::2", "fd00::5", "fd00::6"
    c, c2, v = (client, 40000), (client, 40001), (vip6, 80)
    l1, l2, r1, r2 = (lip, 1025), (lip, 1026), (rs1, 8080), (rs2, 8080)
    get, ok = b"GET / HTTP/1.0\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\nhello"
    ins, exp0, exp1 = [], [], []
    # At start, an unsolicited advertisement of each owned address (sorted),
    # to all nodes, Router and Override set.
    for a in (dip, lip, vip6):
        exp0.append(Ether(src=LB, dst="33:33:00:00:00:01") / IPv6(src=a, dst="ff02::1", hlim=255) /
                    ICMPv6ND_NA(R=1, S=0, O=1, tgt=a) / ICMPv6NDOptDstLLAddr(lladdr=LB))
    # The client and the first real server ask for the director's address
    # and the local address: answered, solicited, and both learned.
    ins.append(ns(CLIENT, client, dip))
    exp0.append(na(LB, CLIENT, dip, client, (1, 1, 1)))
    ins.append(ns(RS1, rs1, lip))
    exp0.append(na(LB, RS1, lip, rs1, (1, 1, 1)))
    # A connection to the first server (rr), both directions; hop limit 63.
    for inp, out in [
        (tcp6(CLIENT, LB, c, v, "S", 1000), tcp6(LB, RS1, l1, r1, "S", 1000, hlim=63)),
        (tcp6(RS1, LB, r1, l1, "SA", 5000, 1001), tcp6(LB, CLIENT, v, c, "SA", 5000, 1001, hlim=63)),
        (tcp6(CLIENT, LB, c, v, "PA", 1001, 5001, get), tcp6(LB, RS1, l1, r1, "PA", 1001, 5001, get, hlim=63)),
        (tcp6(RS1, LB, r1, l1, "PA", 5001, 1019, ok), tcp6(LB, CLIENT, v, c, "PA", 5001, 1019, ok, hlim=63)),
    ]:
        ins.append(inp)
        exp0.append(out)
    # The second connection goes to the second server, whose MAC is not
    # known: the director solicits it from its own address and holds the
    # SYN; the server's advertisement teaches it (and goes to the kernel
    # too), and the SYN leaves once the burst is done.
    ins.append(tcp6(CLIENT, LB, c2, v, "S", 7000))
    group, mac = solicited(rs2)
    exp0.append(Ether(src=LB, dst=mac) / IPv6(src=dip, dst=group, hlim=255) /
                ICMPv6ND_NS(tgt=rs2) / ICMPv6NDOptSrcLLAddr(lladdr=LB))
    advert = na(RS2, LB, rs2, dip, (0, 1, 1))
    ins.append(advert)
    exp1.append(advert)
    # Ping the VIP.
    ins.append(Ether(src=CLIENT, dst=LB) / IPv6(src=client, dst=vip6) / ICMPv6EchoRequest(id=7, seq=1, data=b"ping"))
    exp0.append(Ether(src=LB, dst=CLIENT) / IPv6(src=vip6, dst=client, hlim=64) / ICMPv6EchoReply(id=7, seq=1, data=b"ping"))
    # A solicitation that crossed a router (hop limit 254): refused.
    ins.append(ns(CLIENT, client, dip, hlim=254))
    exp0.append(tcp6(LB, RS2, l2, r2, "S", 7000, hlim=63))
    return stamp(ins), stamp(exp0), stamp(exp1)


def main():
    ins, exp0, exp1 = fnat_one_arm()
    wrpcap("lb-fnat-one-arm/in0.pcap", ins)
    wrpcap("lb-fnat-one-arm/expect0.pcap", garps(DIP, VIP, LIP) + exp0)
    wrpcap("lb-fnat-one-arm/expect1.pcap", exp1)
    ins, exp0 = fnat_vlan()
    wrpcap("lb-fnat-vlan/in0.pcap", ins)
    # The gratuitous ARPs at start: each owned address on the port, then
    # on its VLAN (tagged), address by address.
    untagged = garps(DIP, VIP, LIP, "10.100.0.1")
    announced = []
    for g in untagged:
        announced += [g, Ether(src=LB, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=100) / g[ARP]]
    wrpcap("lb-fnat-vlan/expect0.pcap", stamp(announced) + exp0)
    ins, exp0 = fnat_wire()
    wrpcap("lb-fnat-wire/in0.pcap", ins)
    wrpcap("lb-fnat-wire/expect0.pcap", garps(DIP, VIP, LIP) + exp0)
    ins, exp0, exp1 = fnat6_one_arm()
    wrpcap("lb-fnat6-one-arm/in0.pcap", ins)
    wrpcap("lb-fnat6-one-arm/expect0.pcap", exp0)
    wrpcap("lb-fnat6-one-arm/expect1.pcap", exp1)
    for name, make in [("nat", nat_one_arm), ("dr", dr_one_arm), ("tun", tun_one_arm)]:
        ins, exp, exp1 = make()
        wrpcap(f"lb-{name}-one-arm/in0.pcap", ins)
        wrpcap(f"lb-{name}-one-arm/expect0.pcap", garps(DIP, VIP) + exp)
        wrpcap(f"lb-{name}-one-arm/expect1.pcap", exp1)


if __name__ == "__main__":
    main()
