"""`calipso send`: HL7 v2 files over MLLP, one connection, each message's acknowledgements
read as the message asks for them.

- Original mode (MSH-15 and MSH-16 empty): one ACK (AA, AE, AR) per message.
- Enhanced mode: an accept ACK (CA, CE, CR) as MSH-15 asks, then an application ACK (AA, AE,
  AR) as MSH-16 asks (AL always, NE never, ER on error only, SU on success only; empty MSH-16
  is AL). A message asking for neither is not waited for. A CE or CR ends the message: nothing
  is applied after a refusal at accept level.
- Every ACK is matched to its message by MSA-2; one arriving late for an earlier message is
  counted for that message, never taken as the current one's.
- A wait that runs out (`--timeout` for an ACK that must come; a few seconds at most for one
  that comes only on some outcomes) is reported clearly, and the run goes on with the next file.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from hl7v2_bridge.ack import SENT_WHEN, ack_code
from hl7v2_bridge.client import MllpClient

SUFFIXES = (".hl7", ".er7", ".txt", ".bin")
ACCEPT_CODES = ("CA", "CE", "CR")
REFUSED = ("AE", "AR", "CE", "CR")
CONDITIONAL_WAIT = 3.0  # seconds, at most, for an ACK sent only on some outcomes (ER, SU)
NO_ACK = "no ACK (as asked)"
TIMED_OUT = "no ACK (timed out)"


def message_files(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise OSError(f"no such file or folder: {path}")
    return found


@dataclass(frozen=True)
class Expected:
    """Which acknowledgements a message asks for, read from its MSH."""

    control_id: str
    accept: tuple[str, ...]  # outcomes ("ok", "error") on which an accept ACK comes; () for none
    application: tuple[str, ...]

    @classmethod
    def of(cls, message: bytes) -> "Expected":
        header = message.replace(b"\n", b"\r").split(b"\r", 1)[0].decode("latin-1")
        fields = header.split(header[3], 20) if header.startswith("MSH") and len(header) > 3 else []
        value = lambda n: fields[n - 1].split("^", 1)[0].strip() if len(fields) >= n else ""  # noqa: E731 - MSH-n
        control_id, accept, application = value(10), value(15), value(16)
        if not accept and not application:
            return cls(control_id, (), ("ok", "error"))  # original mode: one ACK
        return cls(control_id, SENT_WHEN.get(accept, ("ok", "error")), SENT_WHEN.get(application, ("ok", "error")))

    def must(self, level: tuple[str, ...]) -> bool:
        return set(level) == {"ok", "error"}


@dataclass
class Tally:
    codes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


async def send_files(paths: list[Path], host: str, port: int, timeout: float, out: TextIO, progress: TextIO) -> int:
    """Send every file; print a summary per ACK code. 1 when a message was refused or an ACK
    that had to come did not, else 0."""
    files = message_files(paths)
    tally = Tally()
    client: MllpClient | None = None
    try:
        for number, path in enumerate(files, start=1):
            if client is None:
                client = await MllpClient(host, port, timeout).__aenter__()
            try:
                await _send_one(client, path, timeout, tally)
            except ConnectionError as error:
                tally.codes[TIMED_OUT] += 1
                tally.problems.append(f"{path}: the connection was lost ({error}); reconnecting for the next file")
                await client.__aexit__(None, None, None)
                client = None
            print(f"\r{number}/{len(files)} sent", end="", file=progress, flush=True)
    finally:
        if client is not None:
            await client.__aexit__(None, None, None)
    print(file=progress)
    print(f"sent {len(files)} messages: " + ", ".join(f"{code} {count}" for code, count in sorted(tally.codes.items())), file=out)
    for problem in tally.problems[:20]:
        print(f"  {problem}", file=out)
    return 1 if tally.problems else 0


async def _send_one(client: MllpClient, path: Path, timeout: float, tally: Tally) -> None:
    message = path.read_bytes()
    expected = Expected.of(message)
    await client.send_frame(message)
    if not expected.accept and not expected.application:
        tally.codes[NO_ACK] += 1
        return
    accepted = False
    while True:
        still_due = (expected.accept if not accepted else ()) or expected.application
        if not still_due:
            return
        must = expected.must(expected.application) or (not accepted and expected.must(expected.accept))
        wait = timeout if must else min(timeout, CONDITIONAL_WAIT)
        try:
            ack = await client.receive(wait)
        except (asyncio.TimeoutError, TimeoutError):
            if must:
                tally.codes[TIMED_OUT] += 1
                tally.problems.append(f"{path}: no acknowledgement within {wait:g} s (MSH-10 {expected.control_id[:40]})")
            else:
                tally.codes[NO_ACK] += 1
            return
        code = ack_code(ack) or "??"
        answered = _answered(ack)
        tally.codes[code] += 1
        if code in REFUSED or code == "??":
            errors = [s.decode("latin-1") for s in ack.replace(b"\n", b"\r").split(b"\r") if s.startswith(b"ERR")]
            tally.problems.append(f"{path if answered == expected.control_id else 'an earlier message ' + answered[:40]}: "
                                  f"{code} {' '.join(errors)[:300]}")
        if answered != expected.control_id:
            continue  # a late ACK for an earlier message: counted for it, not taken as this one's
        if code in ("CE", "CR"):
            return  # refused at accept level: no application ACK follows
        if code in ACCEPT_CODES:
            accepted = True
            continue
        return  # the application ACK: done


def _answered(ack: bytes) -> str:
    """MSA-2: the control id of the message an ACK answers."""
    for segment in ack.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA") and len(segment) > 3:
            parts = segment.decode("latin-1").split(segment.decode("latin-1")[3])
            return parts[2] if len(parts) > 2 else ""
    return ""


__all__ = ["Expected", "message_files", "send_files"]
