"""What every benchmark needs: servers in child processes, a load loop, CPU and latency figures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import httpx

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class ServerProcess:
    """A server started as a child process, ready when `ready_url` answers 200."""

    def __init__(self, command: Sequence[str], ready_url: str, env: dict[str, str] | None = None):
        self.process = subprocess.Popen(
            list(command), cwd=ROOT, env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(ready_url, timeout=2).status_code < 500:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()  # never ready: not left running behind the failed bench
        raise RuntimeError(f"server did not answer {ready_url}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@dataclass
class Figures:
    """One measured phase: requests, wall time, wrk latencies, server and database CPU."""

    label: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    server_cpu_s: float
    db_cpu_s: float
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def server_us(self) -> float:
        return self.server_cpu_s / self.requests * 1e6 if self.requests else 0.0

    @property
    def db_us(self) -> float:
        return self.db_cpu_s / self.requests * 1e6 if self.requests else 0.0

    def merge(self, other: "Figures") -> "Figures":
        """Rounds added up; p50 is the mean of the rounds' p50, p99 the worst round's."""
        return Figures(self.label, self.requests + other.requests, self.seconds + other.seconds,
                       (self.p50_ms + other.p50_ms) / 2, max(self.p99_ms, other.p99_ms),
                       self.server_cpu_s + other.server_cpu_s, self.db_cpu_s + other.db_cpu_s,
                       self.errors + other.errors)

    def row(self) -> str:
        return (f"{self.label:<22} {self.rate:>8.0f} {self.p50_ms:>8.1f} {self.p99_ms:>8.1f} "
                f"{self.server_us:>13.0f} {self.db_us:>10.0f} {self.errors:>6}")


HEADER = f"{'phase':<22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'server µs/req':>13} {'db µs/req':>10} {'errors':>6}"
WRK_DIR = Path(__file__).resolve().parent / "wrk"


def require_wrk() -> str:
    """The wrk load generator (C, so the load costs little CPU): Debian package `wrk`."""
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench needs wrk: apt-get install wrk (make bench installs it when it can)")
    return found


def run_wrk(label: str, url: str, script: str, script_args: Sequence[str], seconds: int, connections: int,
            server_pid: int, db_pid: int, until: Callable[[], bool] | None = None, headers: Sequence[str] = ()) -> Figures:
    """Drive `url` with wrk for `seconds` (or until `until()` holds) and measure server and database CPU.
    `headers`: "Name: value" lines sent with every request (a bearer token)."""
    command = [require_wrk(), "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s",
               *(item for header in headers for item in ("-H", header)),
               "-s", str(WRK_DIR / script), url, "--", *script_args]
    server_cpu, db_cpu = cpu_seconds(server_pid), cpu_seconds(db_pid)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    if process.poll() is None and until is not None and (failure := _script_failure(process)):
        process.kill()
        raise RuntimeError(f"wrk script failed: {failure}")
    if until is not None:
        while process.poll() is None and not until():
            time.sleep(0.5)
        process.send_signal(signal.SIGINT)  # wrk stops, prints its figures and runs done()
    output, errors = process.communicate()
    if "WRK_JSON" not in output:
        raise RuntimeError(f"wrk failed: {errors[-500:]}")
    server_cpu, db_cpu = cpu_seconds(server_pid) - server_cpu, cpu_seconds(db_pid) - db_cpu
    report = json.loads(output.split("WRK_JSON", 1)[1])
    return Figures(label, report["requests"], report["duration_us"] / 1e6, report["p50_us"] / 1000,
                   report["p99_us"] / 1000, server_cpu, db_cpu, report["status_errors"] + report["socket_errors"])


def _script_failure(process: subprocess.Popen[str]) -> str | None:
    """wrk runs plain GETs when its Lua script fails to load: catch that early."""
    import select

    assert process.stderr is not None
    ready, _, _ = select.select([process.stderr], [], [], 0)
    return process.stderr.readline().strip() if ready else None


def calipso_server(uri: str, database: str, port: int, env: dict[str, str] | None = None, mllp_port: int = 0) -> ServerProcess:
    """`calipso serve` for a bench: auth off, MLLP on `mllp_port` (0: any free one), on the database at `uri`,
    with a data directory of its own (an audit journal left by an earlier run would be replayed into this one)."""
    return ServerProcess(
        [python(), "-m", "fhir_server.cli", "serve", "--auth", "off", "--port", str(port), "--mllp-port", str(mllp_port),
         "--log-level", "warning", "--data-dir", tempfile.mkdtemp(prefix="calipso-bench-serve-")],
        f"http://127.0.0.1:{port}/fhir/metadata",
        env={"CALIPSO_MONGODB_URI": uri, "CALIPSO_DATABASE": database, **(env or {})},
    )


def python() -> str:
    return sys.executable
