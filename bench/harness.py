"""What every benchmark needs: servers in child processes, a load loop, CPU and latency figures."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Sequence

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
    """One measured phase: requests, wall time, client latencies, server and database CPU."""

    label: str
    requests: int
    seconds: float
    latencies_ms: list[float]
    server_cpu_s: float
    db_cpu_s: float
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def server_us(self) -> float:
        return self.server_cpu_s / self.requests * 1e6

    @property
    def db_us(self) -> float:
        return self.db_cpu_s / self.requests * 1e6

    def merge(self, other: "Figures") -> "Figures":
        return Figures(self.label, self.requests + other.requests, self.seconds + other.seconds,
                       self.latencies_ms + other.latencies_ms, self.server_cpu_s + other.server_cpu_s,
                       self.db_cpu_s + other.db_cpu_s, self.errors + other.errors)

    def row(self) -> str:
        return (f"{self.label:<22} {self.rate:>8.0f} {self.percentile(0.5):>8.1f} {self.percentile(0.99):>8.1f} "
                f"{self.server_us:>12.0f} {self.db_us:>10.0f} {self.errors:>6}")


HEADER = f"{'phase':<22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'server µs/req':>12} {'db µs/req':>10} {'errors':>6}"

Call = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


async def drive(label: str, call: Call, count: int, connections: int, server_pid: int, db_pid: int,
                expect: int) -> Figures:
    """Run `count` calls over `connections` concurrent connections; measure everything."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        next_index = iter(range(count))

        async def worker() -> None:
            nonlocal errors
            for index in next_index:
                started = time.perf_counter()
                response = await call(client, index)
                latencies.append((time.perf_counter() - started) * 1000)
                errors += response.status_code != expect

        server_cpu, db_cpu, started = cpu_seconds(server_pid), cpu_seconds(db_pid), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        seconds = time.perf_counter() - started
        return Figures(label, count, seconds, latencies, cpu_seconds(server_pid) - server_cpu,
                       cpu_seconds(db_pid) - db_cpu, errors)


def python() -> str:
    return sys.executable
