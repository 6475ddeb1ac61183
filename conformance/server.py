"""A real `calipso serve` child process on a free loopback port, with its own data dir."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

CALIPSO = [sys.executable, "-m", "fhir_server.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Served:
    """One `calipso serve` child process and its base URL."""

    def __init__(self, data_dir: Path, mllp: bool = False, auth: bool = False, log_level: str = "info",
                 env: dict[str, str] | None = None):
        """`auth`: tokens required, from the dev issuer whose key is in `data_dir` (see `token`);
        `env`: CALIPSO_* settings for this process."""
        self.data_dir = data_dir
        self.port = free_port()
        self.mllp_port = free_port() if mllp else 0
        env = {**{k: v for k, v in os.environ.items() if k != "CALIPSO_MONGODB_URI"}, **(env or {})}
        self.log = data_dir.parent / f"serve-{self.port}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                CALIPSO + ["serve", "--port", str(self.port), "--mllp-port", str(self.mllp_port), "--data-dir", str(data_dir),
                           "--log-level", log_level, *(["--auth", "on", "--dev-issuer"] if auth else ["--auth", "off"])],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        self.base = f"http://127.0.0.1:{self.port}/fhir"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"calipso exited:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.base}/metadata", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"calipso did not start:\n{self.log.read_text()}")

    def token(self, *args: str) -> str:
        """A token from `calipso token` on this server's data dir (args: --sub, --scope, ...)."""
        done = subprocess.run(CALIPSO + ["token", "--data-dir", str(self.data_dir), *args], capture_output=True, text=True,
                              timeout=60, check=True)
        return done.stdout.strip().splitlines()[-1]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


__all__ = ["CALIPSO", "Served", "free_port"]
