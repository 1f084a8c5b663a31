#!/usr/bin/python3
"""Draws a benchmark run: Mpps by mode and session count (64-byte
established traffic), with the testpmd ceilings measured in the same run
on the same profiles drawn over each group. Usage: chart.py RESULTS.json OUT.png"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def human(n):
    if n >= 1_000_000:
        return f"{n / 1e6:g}M"
    if n >= 1000:
        return f"{n / 1e3:g}k"
    return str(n)


def main(src, out):
    with open(src) as f:
        r = json.load(f)
    cases = [c for c in r["cases"] if c["kind"] == "established" and c["pkt_bytes"] == 64]
    modes = [m for m in ["dr", "nat", "tun", "fnat"] if any(c["mode"] == m for c in cases)]
    # Sessions as asked for: round the measured count to the nearest case.
    sizes = sorted({c["sessions"] for c in cases})
    fig, ax = plt.subplots(figsize=(9, 5))
    width = 0.8 / max(len(modes), 1)
    for i, m in enumerate(modes):
        xs, ys = [], []
        for j, s in enumerate(sizes):
            for c in cases:
                if c["mode"] == m and c["sessions"] == s:
                    xs.append(j + i * width)
                    ys.append(c["mpps"])
        bars = ax.bar(xs, ys, width, label=m.upper())
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    # Each group's ceiling: testpmd on that group's own profile.
    top = 0.0
    for j, s in enumerate(sizes):
        for b in r["baselines"]:
            if b["kind"] == "established" and b["pkt_bytes"] == 64 and abs(b["flows"] - s) <= s // 100:
                x0, x1 = j - width / 2, j + width * (len(modes) - 0.5)
                ax.hlines(b["5tswap_mpps"], x0, x1, colors="red", linestyles="--",
                          label="testpmd 5tswap" if j == 0 else None)
                ax.hlines(b["io_mpps"], x0, x1, colors="black", linestyles=":",
                          label="testpmd io" if j == 0 else None)
                ax.text(x1, b["5tswap_mpps"], f" {b['5tswap_mpps']:.1f}", va="center", fontsize=7, color="red")
                ax.text(x1, b["io_mpps"], f" {b['io_mpps']:.1f}", va="center", fontsize=7)
                top = max(top, b["io_mpps"])
    ax.set_ylim(0, max(top, max((c["mpps"] for c in cases), default=1)) * 1.25)
    ax.set_xticks([j + width * (len(modes) - 1) / 2 for j in range(len(sizes))])
    ax.set_xticklabels([f"{human(s)} sessions" for s in sizes])
    ax.set_ylabel("Mpps forwarded, one worker core")
    m = r["machine"]
    ax.set_title(f"Established TCP, 64 B: {r['date']} on {m['host']} ({m['memory_mode']})", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", ncol=6)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
