"""Export output files on disk: one folder per job under the data folder, NDJSON parts appended
page by page, made durable at each checkpoint. A part's valid length is what the job's last checkpoint recorded, so bytes a dead or
displaced worker wrote after its last checkpoint are never served (a resumed job starts a new
part instead of rewriting an old one)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

CHUNK = 256 * 1024
JOB_ID = re.compile(r"[0-9a-f]{32}")
FILE_NAME = re.compile(r"[A-Za-z]+(-[A-Za-z]+)?-\d{1,6}\.ndjson")


class ExportFiles:
    def __init__(self, root: Path):
        self._root = root

    def folder(self, job_id: str) -> Path:
        if not JOB_ID.fullmatch(job_id):
            raise ValueError("not an export job id")
        return self._root / job_id

    def path(self, job_id: str, name: str) -> Path:
        if not FILE_NAME.fullmatch(name):
            raise ValueError("not an export file name")
        return self.folder(job_id) / name

    async def prepare(self, job_id: str) -> None:
        await asyncio.to_thread(self.folder(job_id).mkdir, parents=True, exist_ok=True)

    async def append(self, job_id: str, name: str, data: bytes) -> None:
        """Append (durable once `sync` returns). Raises FileNotFoundError once the job's folder
        is gone (cancelled)."""
        await asyncio.to_thread(_append, self.path(job_id, name), data)

    async def sync(self, job_id: str, names: list[str]) -> None:
        """Make what was appended to these parts durable (before a checkpoint counts it)."""
        await asyncio.to_thread(_sync, [self.path(job_id, name) for name in names])

    async def read(self, job_id: str, name: str, length: int) -> AsyncIterator[bytes]:
        """The first `length` bytes of a part, in chunks."""
        with open(self.path(job_id, name), "rb") as part:
            left = length
            while left > 0:
                chunk = await asyncio.to_thread(part.read, min(CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    async def remove(self, job_id: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self.folder(job_id), True)


def _append(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _sync(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = ["ExportFiles", "JOB_ID"]
