#!/usr/bin/python3
"""Builds the golden cases' input and expected pcaps with scapy.

Run from this directory with Debian's python3-scapy: `/usr/bin/python3 make_inputs.py`. The packets are chosen by
hand (see each case's README.md); scapy writes them, so the expected output
does not come from the code under test. Timestamps are fixed so the files are
reproducible byte for byte.
"""
from scapy.all import (ARP, ICMP, IP, IPv6, TCP, UDP, Dot1Q, Ether, Raw,
                       wrpcap)

LB = "02:00:00:00:00:01"      # the dataplane's port
CLIENT = "02:00:00:00:01:01"
RS = "02:00:00:00:02:01"
VIP = "198.18.0.10"


def stamp(pkts):
    for i, p in enumerate(pkts):
        p.time = 1700000000 + i / 1000
    return pkts


def mixed():
    """One of each kind the dataplane will meet on the wire."""
    return stamp([
        Ether(src=CLIENT, dst="ff:ff:ff:ff:ff:ff") /
        ARP(op=1, hwsrc=CLIENT, psrc="10.0.0.2", pdst="10.0.0.1"),
        Ether(src=CLIENT, dst=LB) / IP(src="10.0.0.2", dst="10.0.0.1") /
        ICMP(type=8, id=0x1234, seq=1) / Raw(b"ping-payload"),
        Ether(src=CLIENT, dst=LB) / IP(src="10.0.0.2", dst=VIP, ttl=64) /
        TCP(sport=40000, dport=80, flags="S", seq=1000, options=[("MSS", 1460)]),
        Ether(src=CLIENT, dst=LB) / IP(src="10.0.0.2", dst=VIP) /
        TCP(sport=40000, dport=80, flags="PA", seq=1001, ack=5001) /
        Raw(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n"),
        Ether(src=CLIENT, dst=LB) / IP(src="10.0.0.2", dst=VIP) /
        UDP(sport=5353, dport=53) / Raw(b"\x12\x34" + b"q" * 30),
        Ether(src=CLIENT, dst=LB) / IPv6(src="fd00::2", dst="fd00::10") /
        UDP(sport=1000, dport=2000) / Raw(b"v6"),
        Ether(src=CLIENT, dst=LB) / Dot1Q(vlan=100) /
        IP(src="10.0.0.2", dst=VIP) / UDP(sport=1, dport=2),
        # A truncated IPv4 header: forwarded as bytes here, a counted drop in
        # the load balancer later.
        Ether(src=CLIENT, dst=LB, type=0x0800) / Raw(b"\x45\x00\x00"),
        Ether(src=CLIENT, dst=LB) / IP(src="10.0.0.2", dst=VIP) /
        TCP(sport=40000, dport=80, flags="FA", seq=1031, ack=5001),
    ])


def replies():
    """Server-to-client traffic for the second port."""
    return stamp([
        Ether(src=RS, dst=LB) / IP(src="10.0.1.2", dst="10.0.0.2") /
        TCP(sport=80, dport=40000, flags="SA", seq=5000, ack=1001),
        Ether(src=RS, dst=LB) / IP(src="10.0.1.2", dst="10.0.0.2") /
        UDP(sport=53, dport=5353) / Raw(b"answer"),
    ])


def main():
    m = mixed()
    wrpcap("forward-one-port/in0.pcap", m)
    wrpcap("forward-one-port/expect0.pcap", m)
    r = replies()
    wrpcap("forward-two-ports/in0.pcap", m)
    wrpcap("forward-two-ports/in1.pcap", r)
    # Port 0's traffic leaves through port 1 and the other way round.
    wrpcap("forward-two-ports/expect0.pcap", r)
    wrpcap("forward-two-ports/expect1.pcap", m)


if __name__ == "__main__":
    main()
