"""`calipso send`: HL7 v2 files over MLLP, one connection, each ACK awaited."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TextIO

from hl7v2_bridge.client import MllpClient, ack_code

SUFFIXES = (".hl7", ".er7", ".txt", ".bin")


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


async def send_files(paths: list[Path], host: str, port: int, timeout: float, out: TextIO, progress: TextIO) -> int:
    files = message_files(paths)
    codes: Counter[str] = Counter()
    problems: list[str] = []
    async with MllpClient(host, port, timeout) as client:
        for number, path in enumerate(files, start=1):
            ack = await client.send(path.read_bytes())
            code = ack_code(ack) or "??"
            codes[code] += 1
            if code not in ("AA", "CA"):
                errors = [s.decode("latin-1") for s in ack.replace(b"\n", b"\r").split(b"\r") if s.startswith(b"ERR")]
                problems.append(f"{path}: {code} {' '.join(errors)[:300]}")
            print(f"\r{number}/{len(files)} sent", end="", file=progress, flush=True)
    print(file=progress)
    print(f"sent {len(files)} messages: " + ", ".join(f"{code} {count}" for code, count in sorted(codes.items())), file=out)
    for problem in problems[:20]:
        print(f"  {problem}", file=out)
    return 1 if problems else 0


__all__ = ["message_files", "send_files"]
