"""`calipso export`: a Bulk Data client for operators. Kick off, show the server's progress,
download every file (gzip on the wire), check each file's line count against the manifest,
keep the manifest beside the files, then DELETE the job so the server frees its copy.
Ctrl-C while the export runs cancels it on the server."""

from __future__ import annotations

import asyncio
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
LONGEST_WAIT = 10.0  # seconds between polls, whatever Retry-After says
STEPS = re.compile(r"\((?P<step>\d+) of (?P<steps>\d+) steps\)")


class ExportFailed(Exception):
    """The server refused or failed the export (its OperationOutcome's text)."""


@dataclass
class Downloaded:
    folder: Path
    files: list[Path] = field(default_factory=list)
    resources: dict[str, int] = field(default_factory=dict)  # type -> count (output files)


def _diagnostics(response: httpx.Response) -> str:
    try:
        issues = response.json().get("issue", [])
        text = "; ".join(i.get("diagnostics") or i.get("code", "") for i in issues)
    except ValueError:
        text = response.text[:200]
    return f"HTTP {response.status_code}: {text}"


async def export(client: httpx.AsyncClient, kick_off_url: str, folder: Path, keep: bool = False,
                 progress: TextIO = sys.stderr) -> Downloaded:
    response = await client.get(kick_off_url, headers=ASYNC)
    if response.status_code != 202:
        raise ExportFailed(_diagnostics(response))
    status_url = response.headers["content-location"]
    try:
        manifest = await _wait(client, status_url, progress)
    except (KeyboardInterrupt, asyncio.CancelledError):
        await client.delete(status_url)
        raise
    folder.mkdir(parents=True, exist_ok=True)
    done = Downloaded(folder)
    for part in ("output", "deleted", "error"):
        for item in manifest.get(part, []):
            path = await _download(client, item["url"], folder, item["count"])
            done.files.append(path)
            if part == "output":
                done.resources[item["type"]] = done.resources.get(item["type"], 0) + item["count"]
    (folder / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    if not keep:
        await client.delete(status_url)
    return done


async def _wait(client: httpx.AsyncClient, status_url: str, progress: TextIO) -> dict[str, Any]:
    while True:
        response = await client.get(status_url)
        if response.status_code == 200:
            print(file=progress)
            return dict(response.json())
        if response.status_code != 202:
            print(file=progress)
            raise ExportFailed(_diagnostics(response))
        print(f"\r{bar(response.headers.get('x-progress', ''))}", end="", file=progress, flush=True)
        await asyncio.sleep(min(float(response.headers.get("retry-after", "1") or 1), LONGEST_WAIT))


def bar(text: str, width: int = 20) -> str:
    """A progress line from the server's X-Progress ("1200 resources exported, output Patient
    (2 of 5 steps)"): a bar of the steps done, then the text."""
    found = STEPS.search(text)
    done = (int(found["step"]) - 1) / int(found["steps"]) if found and int(found["steps"]) else 0.0
    filled = round(done * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {text[:70]:<70}"


async def _download(client: httpx.AsyncClient, url: str, folder: Path, count: int) -> Path:
    path = folder / url.rsplit("/", 1)[1]
    lines = 0
    async with client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as response:
        if response.status_code != 200:
            await response.aread()
            raise ExportFailed(f"{url}: {_diagnostics(response)}")
        with open(path, "wb") as out:
            async for chunk in response.aiter_bytes():  # unpacked as it arrives
                out.write(chunk)
                lines += chunk.count(b"\n")
    if lines != count:
        raise ExportFailed(f"{path.name}: {lines} lines where the manifest says {count}")
    return path


__all__ = ["Downloaded", "ExportFailed", "bar", "export"]
