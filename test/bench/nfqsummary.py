"""Summary of test/bench/nfqueue.sh's raw results, as a Markdown table.

Per round, ftpalg is compared with the C floor of the same round; the last
line is the median of the rounds' ratios.
"""
import statistics as st
import sys

rows = [l.split() for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")]
rounds = sorted({int(r[0]) for r in rows})


def get(r, v):
    return next(x for x in rows if int(x[0]) == r and x[1] == v)


print("| round | baseline RTT us | C added us/pkt | ftpalg added us/pkt | latency ratio "
      "| C pps | ftpalg pps | pps ratio | C CPU us/pkt | ftpalg CPU us/pkt | CPU ratio |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
lat, pps, cpu = [], [], []
for r in rounds:
    b, c, g = get(r, "baseline"), get(r, "c"), get(r, "ftpalg")
    base = float(b[2])
    ac, ag = (float(c[2]) - base) / 2, (float(g[2]) - base) / 2
    lr = ag / ac if ac > 0 else float("nan")
    pr = float(g[5]) / float(c[5])
    cr = float(g[6]) / float(c[6])
    lat.append(lr)
    pps.append(pr)
    cpu.append(cr)
    print(f"| {r} | {base:.1f} | {ac:.1f} | {ag:.1f} | {lr:.2f} | {c[5]} | {g[5]} | {pr:.2f} "
          f"| {c[6]} | {g[6]} | {cr:.2f} |")
print()
print(f"Median over {len(rounds)} rounds: latency {st.median(lat):.2f}x C (target <= 1.25), "
      f"packets/s {st.median(pps):.2f}x C (target >= 0.8), CPU per packet {st.median(cpu):.2f}x C "
      f"(target <= 1.3).")
