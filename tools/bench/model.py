"""Scale model of image distribution: how long to stage an image on many nodes.

    tools/bench/run model.py [--size-gb 10] [--nodes 500,5000] [--node-up 1gbit] [--node-down 1gbit]
                             [--origin-up 10gbit] [--calibration tools/bench/results/swarm.json ...]

A fluid model. In the fluid limit (pieces infinitely small, every node uploading from the
first instant) no schedule beats T* = max(S/u_s, S/d, N*S/(u_s + N*u)) (Kumar and Ross,
2006), and a swarm approaches it. Real swarms lose time to piece start-up, choking and
protocol overhead; the model carries that as an efficiency factor T/T*, fitted on the
measured runs of tools/bench/swarm.py as a + b*log2(N) (overheads that grow with the
depth of the distribution tree), and extrapolates it. Runs that kept this machine's CPUs
busy (all hosts share them) are left out: they measured the CPUs, not the swarm.

To *staged*, not only downloaded: calibration runs of ``swarm.py --from-publish`` carry
where each daemon's time went. The download phase alone gives the efficiency fitted as
above; what the daemons add is fitted separately, each as what it scales with: following
the list and the torrent's announce (a constant), the catalogue making the torrent (per
byte: it hashes the image), and staging after the last piece (a constant: the sha512 is
hashed while pieces arrive, only the tail is left). The slowest node's phases are taken.

What it does not know: rack and core link capacities (it assumes a non-blocking network),
disk speed at the nodes, and anything that changes the swarm's behaviour beyond the
measured N. It answers "how long, if the network is as described", not more.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import write_result  # noqa: E402
from lab_services import rate_bytes  # noqa: E402

#: a calibration run whose machine was this busy (tools/bench/swarm.py's "CPU busy") is left out
CPU_BOUND = 0.9


def bound(size: float, nodes: int, origin_up: float, node_up: float, node_down: float) -> float:
    return max(size / origin_up, size / node_down, nodes * size / (origin_up + nodes * node_up))


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares of ratio = a + b*log2(N) (b = 0 from a single point)."""
    if len(points) == 1:
        return points[0][1], 0.0
    xs = [math.log2(n) for n, _ in points]
    ys = [r for _, r in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    b = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    if b < 0:  # efficiency does not improve without bound as N grows: extrapolate flat
        return mean_y, 0.0
    return mean_y - b * mean_x, b


#: the phases of a --from-publish run (tools/bench/swarm.py PUBLISH_PHASES) the model adds to the download
CONSTANT_PHASES = ("list", "sha512+stage")
PER_BYTE_PHASE = "torrent+to fetch"


def daemon_costs(runs: list[dict]) -> tuple[float, float] | None:
    """(seconds added whatever the size, seconds added per byte), the means over ``runs`` that
    carry a phase split (the slowest node's), else None."""
    split = [r for r in runs if r.get("phases") and "download" in r["phases"]]
    if not split:
        return None
    constant = sum(sum(r["phases"][p][1] for p in CONSTANT_PHASES if p in r["phases"]) for r in split) / len(split)
    per_byte = sum(r["phases"].get(PER_BYTE_PHASE, [0, 0])[1] / r["size_bytes"] for r in split) / len(split)
    return constant, per_byte


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=10)
    parser.add_argument("--nodes", default="500,5000")
    parser.add_argument("--node-up", default="1gbit")
    parser.add_argument("--node-down", default="1gbit")
    parser.add_argument("--origin-up", default="10gbit")
    parser.add_argument("--calibration", type=Path, nargs="+", default=[HERE / "results" / "swarm.json"],
                        help="swarm.py results to fit on (their runs pooled)")
    args = parser.parse_args()
    measured = [run for path in args.calibration for run in json.loads(path.read_text())["runs"]]
    names = ", ".join(path.name for path in args.calibration)
    # a run that kept this machine's CPUs busy measured them, not the swarm (each real node has its own)
    runs = [r for r in measured if r.get("cpu_busy", 0.0) < CPU_BOUND]
    if not runs:
        raise SystemExit(f"every run in {names} was CPU-bound here: run swarm.py at lower rates")
    costs = daemon_costs(runs)
    if costs is not None:  # the download's own efficiency; what the daemons add comes on top
        runs = [r for r in runs if r.get("phases") and "download" in r["phases"]]
        a, b = fit([(r["nodes"], r["phases"]["download"][1] / r["bound_seconds"]) for r in runs])
    else:
        a, b = fit([(r["nodes"], r["ratio"]) for r in runs])
    left_out = f" ({len(measured) - len(runs)} CPU-bound left out)" if len(runs) < len(measured) else ""
    print(f"calibration: {len(runs)} measured runs from {names}{left_out}: "
          f"{'download' if costs else 'T'}/T* = {a:.2f} + {b:.3f}*log2(N)")
    if costs is not None:
        print(f"the daemons add {costs[0]:.2f} s (list, staging after the last piece) and "
              f"{costs[1] * 2**30:.2f} s per GiB (the catalogue making the torrent)")
    size = args.size_gb * 1e9
    u_s, u, d = rate_bytes(args.origin_up), rate_bytes(args.node_up), rate_bytes(args.node_down)
    answers = []
    print(f"image {args.size_gb:g} GB, origin up {args.origin_up}, node up {args.node_up}, node down {args.node_down}")
    for n in (int(x) for x in args.nodes.split(",")):
        t_star = bound(size, n, u_s, u, d)
        ratio = a + b * math.log2(n)
        unicast = n * size / u_s
        downloaded = t_star * ratio
        staged = downloaded + (costs[0] + costs[1] * size if costs else 0.0)
        answers.append({"nodes": n, "bound_seconds": t_star, "ratio": ratio, "predicted_seconds": staged,
                        "downloaded_seconds": downloaded, "unicast_seconds": unicast})
        print(f"  {n:>6} nodes: T* {t_star / 60:6.1f} min, downloaded {downloaded / 60:6.1f} min (x{ratio:.2f}), "
              f"{'staged' if costs else 'predicted'} {staged / 60:6.1f} min (x{staged / t_star:.2f}); "
              f"one server by HTTP: {unicast / 3600:6.1f} h")
    write_result("model", {"calibration": {"a": a, "b": b, "runs": len(runs),
                                           "daemon_seconds": costs[0] if costs else None,
                                           "daemon_seconds_per_byte": costs[1] if costs else None}, "size_bytes": size,
                           "origin_up": args.origin_up, "node_up": args.node_up, "node_down": args.node_down,
                           "answers": answers})


if __name__ == "__main__":
    main()
