"""The embedded database: SecantusDB run as a child process on a free loopback port.

A child process (not an import) keeps SecantusDB's GPL-2.0 code out of calipso's process
and lets it be stopped cleanly. It runs `--standalone`: measured here, its replica-set mode
slows writes down fourfold after a few thousand inserts, and standalone still accepts
multi-document transactions. Its launcher runs under a garbage-collection policy that keeps the
database's full collections short (database_process.py).

Its URI caps each client at CLIENT_CONNECTIONS connections. SecantusDB serves each connection
on a thread of its own, behind one storage lock and the GIL, and neither hands over in
arrival order: with 32 searches in flight on the driver's default 100 connections, some waited
far longer than others. With 8, the rest wait in the driver's queue instead: the subject
search's p99 fell by about a fifth at 12k and at 100k entries, at the same throughput
(bench/RESULTS.md, search, session 8). A MongoDB URI given by the operator is left as it is.

It runs `--sync-on-commit`: each commit fsyncs WiredTiger's log before it is acknowledged, so
a 201 or an AA survives a SIGKILL or a power cut (without it, a SIGKILL right after a burst
of creates lost some of them: tests/test_durability.py). SecantusDB does not apply a
transaction's `j: true` on its own, hence the server flag.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("calipso.embedded")

URI_FILE = "database.uri"  # written while the database runs: how other calipso commands find it
LISTENING = re.compile(r"listening on (?P<host>[\w.\-:\[\]]+):(?P<port>\d+)")
LOCKED_MARKERS = ("Device or resource busy", "Resource temporarily unavailable")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
PR_SET_PDEATHSIG = 1
DATABASE_PROCESS = Path(__file__).with_name("database_process.py")
CLIENT_CONNECTIONS = 8  # per client of the embedded database (see above)


def _stop_with_parent() -> None:
    """In the child: get SIGTERM if calipso dies (even by SIGKILL), so no orphan holds the lock."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the parent's normal shutdown still stops the child


class EmbeddedDatabaseError(RuntimeError):
    """The embedded database could not be started; the message says why and what to do."""


def _server_command() -> list[str]:
    """The secantusd-py launcher installed next to this interpreter (or on PATH), run under the
    garbage-collection policy of database_process.py (its docstring says why)."""
    beside = Path(sys.executable).with_name("secantusd-py")
    found = str(beside) if beside.exists() else shutil.which("secantusd-py")
    if not found:
        raise EmbeddedDatabaseError(
            "The embedded database is not installed: install calipso with its 'embedded' extra "
            "(pip install 'calipso[embedded]') or set CALIPSO_MONGODB_URI to a MongoDB replica set."
        )
    return [sys.executable, str(DATABASE_PROCESS), found]


class EmbeddedDatabase:
    """Starts, watches and stops one SecantusDB server storing under `data_dir/db`."""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", sync_on_commit: bool = True):
        """`sync_on_commit=False` only for bench/durability.py, which measures what it costs."""
        self.data_dir = Path(data_dir)
        self.host = host
        self.sync_on_commit = sync_on_commit
        self.storage_path = self.data_dir / "db"
        self.log_path = self.data_dir / "secantusd.log"
        self.uri_path = self.data_dir / URI_FILE
        self._process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    @property
    def uri(self) -> str:
        if self.port is None:
            raise EmbeddedDatabaseError("the embedded database is not running")
        return f"mongodb://{self.host}:{self.port}/?directConnection=true&maxPoolSize={CLIENT_CONNECTIONS}"

    @property
    def pid(self) -> int:
        """The running server's process id (benchmarks count its CPU time)."""
        if self._process is None:
            raise EmbeddedDatabaseError("the embedded database is not running")
        return self._process.pid

    def start(self, timeout: float = START_TIMEOUT_S) -> str:
        """Start the server, wait until it listens, and return its connection URI."""
        self.storage_path.mkdir(parents=True, exist_ok=True)
        command = _server_command() + [
            "--standalone",
            *(["--sync-on-commit"] if self.sync_on_commit else []),  # see the module's docstring
            "--storage-path", str(self.storage_path),
            "--host", self.host,
            "--port", "0",
            "--log-level", "INFO",  # the "listening on" line is INFO
        ]
        with open(self.log_path, "wb") as log_file:
            log_file.write(b"")
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
        try:
            self._process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the terminal reaches calipso, which stops us in order
                preexec_fn=_stop_with_parent,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            log_file.close()
        self.port = self._wait_for_port(timeout)
        self.uri_path.write_text(self.uri + "\n", encoding="utf-8")  # for `calipso inbox` beside a running serve
        log.info("embedded database started pid=%s port=%s", self._process.pid, self.port)
        return self.uri

    @staticmethod
    def running_uri(data_dir: Path) -> str | None:
        """The URI of the embedded database a running calipso holds in `data_dir`, if one
        answers there (a file left by a killed process points at nothing and is ignored)."""
        try:
            uri = (Path(data_dir) / URI_FILE).read_text(encoding="utf-8").strip()
        except OSError:
            return None
        found = re.match(r"mongodb://(?P<host>[\w.\-]+):(?P<port>\d+)/", uri)
        if found is None:
            return None
        try:
            socket.create_connection((found["host"], int(found["port"])), timeout=1).close()
        except OSError:
            return None
        return uri

    def _wait_for_port(self, timeout: float) -> int:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
            match = LISTENING.search(text)
            if match:
                return int(match["port"])
            if self._process.poll() is not None:
                raise self._failure(text)
            time.sleep(0.05)
        self.stop()
        raise EmbeddedDatabaseError(
            f"The embedded database did not start within {timeout:.0f} s (log: {self.log_path})"
        )

    def _failure(self, output: str) -> EmbeddedDatabaseError:
        if any(marker in output for marker in LOCKED_MARKERS):
            return EmbeddedDatabaseError(
                f"The data directory {self.data_dir} is locked: another calipso (or database) "
                "process is using it. Stop that process or pass another --data-dir."
            )
        last = output.strip().splitlines()[-1:] or ["no output"]
        return EmbeddedDatabaseError(
            f"The embedded database exited during start-up ({last[0][:200]}); log: {self.log_path}"
        )

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, wait for a clean WiredTiger shutdown, SIGKILL only as a last resort."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        self.uri_path.unlink(missing_ok=True)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("embedded database did not stop in %.0f s; killing it", timeout)
            process.kill()
            process.wait()
        log.info("embedded database stopped")

    def __enter__(self) -> "EmbeddedDatabase":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


__all__ = ["EmbeddedDatabase", "EmbeddedDatabaseError"]
