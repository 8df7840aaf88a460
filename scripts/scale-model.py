#!/usr/bin/env python3
"""The scale-out model of docs/scale-out.md: step time = compute(global batch / ranks) +
allreduce(gradient bytes) for data-parallel training across hosts, one rank per host.

  compute(b)   = b * record_us                          (per rank, its share b of the batch)
  allreduce(P) = 2 (R-1)/R * P / bandwidth + 2 (R-1) * latency   (ring allreduce)

record_us comes from `nnd bench --json` on one host (1e6 / step_samples_per_second_all_workers);
P is the gradient's bytes (730,880 for the seed's 784-200-100-50-10 network in float32).
Prints the allreduce time, the allreduce's share of a step at the seed's batch 64, and the
per-rank batch at which the allreduce stays under 20 % of a step.
"""
import argparse

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--record-us", type=float, required=True, help="µs per record on one host (from nnd bench)")
p.add_argument("--bytes", type=int, default=730880, help="gradient bytes (seed network: 730880)")
p.add_argument("--latency-us", type=float, default=25.0, help="per-message latency of the network (TCP: ~25 µs)")
p.add_argument("--batch", type=int, default=64, help="global batch (the seed's: 64)")
a = p.parse_args()

print(f"record {a.record_us:.2f} µs, gradient {a.bytes} bytes, latency {a.latency_us:.0f} µs per message, global batch {a.batch}")
print("| link | hosts | allreduce µs | step µs at batch %d | allreduce share | samples/s | per-rank batch for allreduce ≤ 20 %% |" % a.batch)
print("|---|---|---|---|---|---|---|")
for gbit in (10, 25, 100):
    bw = gbit * 1e9 / 8  # bytes per second
    for r in (2, 4, 8, 16):
        ar = (2 * (r - 1) / r * a.bytes / bw) * 1e6 + 2 * (r - 1) * a.latency_us
        compute = a.batch / r * a.record_us
        step = compute + ar
        # compute(b) >= 4 * allreduce  <=>  allreduce <= 20 % of compute + allreduce
        need = 4 * ar / a.record_us
        print(f"| {gbit} Gb/s | {r} | {ar:.0f} | {step:.0f} | {ar / step * 100:.0f} % | {a.batch / step * 1e6:,.0f} | {need:,.0f} |")
print(f"| one host (measured) | 1 | 0 | {a.batch * a.record_us:.0f} | 0 % | {1e6 / a.record_us:,.0f} | - |")
