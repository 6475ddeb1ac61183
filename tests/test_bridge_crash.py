"""Exactly-once through a crash: SIGKILL the server while a sender streams 500 messages,
restart it on the same data, resend every message that got no ACK."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from conformance.server import Served
from hl7v2_bridge.client import MllpClient, ack_code
from tests.bridge_fixtures import sample

MESSAGES = 500
KILL_AFTER = 120


def discharge(n: int) -> bytes:
    """The French A03 for patient n: its own IPP, visit, movement and control id."""
    raw = sample("A03-discharge-home.hl7")
    for old, new in ((b"CHT20261120143000017", f"CRASH-{n:04d}"), (b"000123456", f"9{n:08d}"),
                     (b"V2026-000123", f"V-CRASH-{n:04d}"), (b"MVT-1002", f"MVT-C{n:04d}"), (b"1450312123456", f"14503121{n:05d}")):
        raw = raw.replace(old, new.encode())
    return raw


async def _stream(port: int, numbers: list[int], acked: dict[int, bytes], server: Served | None) -> None:
    """Send one by one, noting each ACK; kill the server (SIGKILL) after KILL_AFTER ACKs."""
    try:
        async with MllpClient("127.0.0.1", port, timeout=60) as client:
            for n in numbers:
                await client.send_raw(b"\x0b" + discharge(n) + b"\x1c\x0d")
                if server is not None and len(acked) == KILL_AFTER:
                    server.process.kill()  # mid-message: this one is sent, its ACK will never come
                acked[n] = await client.receive()
    except (ConnectionError, OSError, asyncio.TimeoutError):
        return


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _wait_gone(pids: list[int], seconds: float) -> None:
    """The embedded database of a killed server gets SIGTERM (PDEATHSIG) and shuts down cleanly;
    under load that takes a while. Wait for it rather than kill it too."""
    deadline = time.monotonic() + seconds
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.5)


def _restart(data_dir: Path) -> Served:
    deadline = time.monotonic() + 60
    while True:
        served = Served(data_dir, mllp=True)
        try:
            served.wait_ready()
            return served
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_sigkill_mid_stream_then_resend_applies_each_message_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = Served(data_dir, mllp=True)
    first.wait_ready()
    database = _children(first.process.pid)
    acked: dict[int, bytes] = {}
    asyncio.run(_stream(first.mllp_port, list(range(MESSAGES)), acked, first))
    first.process.wait(30)
    _wait_gone(database, 300)
    assert KILL_AFTER <= len(acked) < MESSAGES
    second = _restart(data_dir)
    try:
        missing = [n for n in range(MESSAGES) if n not in acked]
        asyncio.run(_stream(second.mllp_port, missing, acked, None))
        assert len(acked) == MESSAGES and all(ack_code(a) == "AA" for a in acked.values())
        resent = {}
        asyncio.run(_stream(second.mllp_port, [0, KILL_AFTER, MESSAGES - 1], resent, None))
        assert all(resent[n] == acked[n] for n in resent)  # a resend of an applied message: the stored ACK
        entries = httpx.get(f"{second.base}/Communication", params={"_summary": "count", "_total": "accurate"}).json()
        assert entries["total"] == MESSAGES  # one discharge entry per message, none twice
        patients = httpx.get(f"{second.base}/Patient", params={"_summary": "count", "_total": "accurate"}).json()
        assert patients["total"] == MESSAGES
        versions, url, params = 0, f"{second.base}/Communication/_history", {"_count": "1000"}
        while url:
            page = httpx.get(url, params=params).json()
            versions += len(page.get("entry", []))
            url, params = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), ""), {}
        assert versions == MESSAGES  # no entry was written, then written again
    finally:
        second.stop()
