"""What every benchmark shares: a catalogue process to measure, and a JSON result file.

Each benchmark measures its figure and a baseline in the same run and prints the ratio.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "tools" / "bench" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30, host: str = "127.0.0.1") -> None:
    """Until ``proc`` listens on ``host:port`` (it exiting first ends the benchmark)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not start")


class CatalogueUnderTest:
    """`vmic serve` in its own process, with a demo CA and one publisher 'bench'.

    ``host`` is the address it binds to; ``prefix`` runs it elsewhere (a network
    namespace: ``host.command()``'s prefix); ``extra`` adds lines to its [catalogue] table.
    """

    TOKEN = "bench-token"

    def __init__(self, workdir: Path, cpu: int | None = None, host: str = "127.0.0.1", port: int | None = None,
                 prefix: list[str] | None = None, extra: str = "", log: Any = None) -> None:
        from vmic.catalogue.config import hash_token
        from vmic.pki import init_keys

        self.keys = init_keys(workdir / "keys")
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        self.data_dir = workdir / "catalogue"
        self.ca_dir = self.keys.ca_dir
        config = workdir / "vmic.toml"
        config.write_text(
            f'[catalogue]\ndata_dir = "{self.data_dir}"\nlisten = "{host}:{self.port}"\n'
            f'endorser_cert = "{self.keys.cert}"\nendorser_key = "{self.keys.key}"\nlog_level = "warning"\n{extra}'
            f'[catalogue.publishers.bench]\ntoken_sha256 = "{hash_token(self.TOKEN)}"\n'
        )
        self.proc = subprocess.Popen([*(prefix or []), *pinned(cpu), sys.executable, "-m", "vmic.cli.main", "serve",
                                      "-c", str(config)], stderr=log)
        wait_port(self.port, self.proc, host=host)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def pinned(cpu: int | None) -> list[str]:
    """A command prefix that runs on one CPU only (nothing when cpu is None or taskset is missing)."""
    import shutil

    if cpu is None or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return []
    return ["taskset", "-c", str(cpu)]


def workdir(prefix: str) -> Path:
    """A scratch directory on the same disk as the data the benchmark writes."""
    base = os.environ.get("VMIC_BENCH_DIR")
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"result written to {path}")
    return path


def sha512_seconds(path: Path, rounds: int = 3) -> float:
    """The best of ``rounds`` plain sha512 passes over ``path`` (warm in the page cache):
    the true limit of anything that must hash every byte on one core."""
    import hashlib

    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        digest = hashlib.sha512()
        with open(path, "rb", buffering=0) as source:
            while block := source.read(4 * 2**20):
                digest.update(block)
        best = min(best, time.perf_counter() - start)
    return best
