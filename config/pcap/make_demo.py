#!/usr/bin/python3
"""Writes demo.pcap, the traffic the demo replays, with Debian's python3-scapy.

Run from this directory: `/usr/bin/python3 make_demo.py`. 64 clients
(10.0.0.1-64) each open a TCP connection to the VIP 198.18.0.10:80 (SYN,
ACK, an HTTP GET, FIN, ACK) and send one UDP query to 198.18.0.10:53;
fixed timestamps keep the file identical from run to run.
"""
from scapy.all import IP, TCP, UDP, Ether, Raw, wrpcap

LB_MAC = "02:00:00:00:00:01"
VIP = "198.18.0.10"


def client_packets(n):
    mac = "02:00:00:00:10:%02x" % n
    ip = "10.0.0.%d" % n
    sport = 40000 + n
    eth = Ether(src=mac, dst=LB_MAC)
    get = b"GET /demo HTTP/1.1\r\nHost: 198.18.0.10\r\n\r\n"
    return [
        eth / IP(src=ip, dst=VIP) / TCP(sport=sport, dport=80, flags="S", seq=1000),
        eth / IP(src=ip, dst=VIP) / TCP(sport=sport, dport=80, flags="A", seq=1001, ack=9001),
        eth / IP(src=ip, dst=VIP) / TCP(sport=sport, dport=80, flags="PA", seq=1001, ack=9001) / Raw(get),
        eth / IP(src=ip, dst=VIP) / TCP(sport=sport, dport=80, flags="FA", seq=1001 + len(get), ack=9101),
        eth / IP(src=ip, dst=VIP) / TCP(sport=sport, dport=80, flags="A", seq=1002 + len(get), ack=9102),
        eth / IP(src=ip, dst=VIP) / UDP(sport=sport, dport=53) / Raw(b"demo-query-%02d" % n),
    ]


def main():
    pkts = [p for n in range(1, 65) for p in client_packets(n)]
    for i, p in enumerate(pkts):
        p.time = 1700000000 + i / 1000
    wrpcap("demo.pcap", pkts)


if __name__ == "__main__":
    main()
