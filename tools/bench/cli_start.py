"""Start-up time of the command-line tools: ``vmic --help``, ``nodecache --help`` and
``vmprov --help`` against ``python -c pass`` (the interpreter alone), in one run.

    tools/bench/run cli_start.py [--rounds 20]

Each row is the median wall time of --rounds runs (after one warm-up run each), and its
ratio to the interpreter's. The goal (issue 11): each tool <= 150 ms.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def median_seconds(command: list[str], rounds: int) -> float:
    subprocess.run(command, capture_output=True, check=True)  # warm the page cache
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    baseline = median_seconds([sys.executable, "-c", "pass"], args.rounds)
    print(f"{'python -c pass':18}: {baseline * 1000:6.1f} ms")
    worst = 0.0
    for tool in ("vmic", "nodecache", "vmprov"):
        seconds = median_seconds([str(BIN / tool), "--help"], args.rounds)
        worst = max(worst, seconds)
        print(f"{tool + ' --help':18}: {seconds * 1000:6.1f} ms  ({seconds / baseline:4.1f}x python -c pass, "
              f"+{(seconds - baseline) * 1000:.0f} ms)")
    print(f"goal <= 150 ms: {'met' if worst <= 0.150 else 'NOT met'} (slowest {worst * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
