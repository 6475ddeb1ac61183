"""`calipso load`: send FHIR content to a server through its REST API.

Inputs are files or folders (searched recursively) of `.json` / `.ndjson`, optionally
gzipped. A transaction or batch Bundle is posted as it is. Everything else (single
resources, NDJSON lines, the entries of collection / searchset / document / history Bundles)
is grouped into transaction Bundles of `--chunk` entries: `PUT Type/id` when the resource has
an id (references between files keep working), `POST Type` otherwise. A chunk whose
transaction fails is sent again as a batch, so that each bad resource is reported on its own
and the good ones still load.

Very large loads: MongoDB aborts transactions that run longer than its lifetime limit (60 s
by default) and the server caps Bundles (CALIPSO_MAX_BUNDLE_ENTRIES, CALIPSO_MAX_BUNDLE_BYTES);
keep chunks at a few hundred entries (the default is 200).
"""

from __future__ import annotations

import gzip
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, TextIO

import httpx
import orjson

SUFFIXES = (".json", ".ndjson", ".json.gz", ".ndjson.gz")
FHIR_JSON = "application/fhir+json"
MAX_REPORTED_FAILURES = 20


@dataclass
class Failure:
    source: str
    status: str
    diagnostics: str


@dataclass
class Summary:
    counts: Counter[str] = field(default_factory=Counter)  # created / updated / unchanged / deleted / failed
    failures: list[Failure] = field(default_factory=list)

    def record(self, source: str, status: str, outcome: Any = None) -> None:
        code = status.split(" ", 1)[0]
        if code == "201":
            self.counts["created"] += 1
        elif code == "200":
            self.counts["updated"] += 1
        elif code == "204":
            self.counts["deleted"] += 1
        else:
            self.counts["failed"] += 1
            self.failures.append(Failure(source, status, _diagnostics(outcome)))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Unit:
    """One POST to the base: a Bundle and where its entries came from."""

    bundle: dict[str, Any]
    sources: list[str]
    convertible: bool  # built by us from plain resources: may be retried as a batch


def discover(paths: list[Path]) -> list[Path]:
    """The files to load, in a stable order; SystemExit for a path that does not exist."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES)))
        elif path.is_file():
            found.append(path)
        else:
            raise SystemExit(f"calipso load: no such file or folder: {path}")
    return found


def _read_text(path: Path) -> str:
    if path.name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            return handle.read()
    return path.read_text(encoding="utf-8")


def units(path: Path, chunk: int) -> Iterator[Unit]:
    """The Bundles to post for one file."""
    text = _read_text(path)
    if path.name.endswith((".ndjson", ".ndjson.gz")):
        resources = [(f"{path.name}:{n + 1}", orjson.loads(line)) for n, line in enumerate(text.splitlines()) if line.strip()]
    else:
        document = orjson.loads(text)
        if isinstance(document, dict) and document.get("resourceType") == "Bundle" and document.get("type") in ("transaction", "batch"):
            sources = [f"{path.name}#entry[{n}]" for n in range(len(document.get("entry") or []))]
            yield Unit(document, sources, convertible=False)
            return
        if isinstance(document, dict) and document.get("resourceType") == "Bundle":
            resources = [
                (f"{path.name}#entry[{n}]", e.get("resource"))
                for n, e in enumerate(document.get("entry") or [])
                if isinstance(e, dict) and e.get("resource") is not None
            ]
        else:
            resources = [(path.name, document)]
    for start in range(0, len(resources), chunk):
        part = resources[start : start + chunk]
        entries = [_entry(resource) for _, resource in part]
        yield Unit({"resourceType": "Bundle", "type": "transaction", "entry": entries}, [s for s, _ in part], convertible=True)


def _entry(resource: Any) -> dict[str, Any]:
    resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
    resource_id = resource.get("id") if isinstance(resource, dict) else None
    if isinstance(resource_type, str) and isinstance(resource_id, str):
        return {"resource": resource, "request": {"method": "PUT", "url": f"{resource_type}/{resource_id}"}}
    return {"resource": resource, "request": {"method": "POST", "url": str(resource_type or "Resource")}}


async def load(client: httpx.AsyncClient, base_url: str, files: list[Path], chunk: int, progress: "Progress") -> Summary:
    """Post every file's Bundles to the FHIR base, one at a time, and count what happened."""
    summary = Summary()
    for path in files:
        try:
            file_units = list(units(path, chunk))
        except (OSError, UnicodeDecodeError, orjson.JSONDecodeError, EOFError, gzip.BadGzipFile) as error:
            summary.record(path.name, "400 Unreadable", {"issue": [{"diagnostics": f"{type(error).__name__}: {error}"[:200]}]})
            progress.show(path, summary)
            continue
        for unit in file_units:
            await _post(client, base_url, unit, summary)
            progress.show(path, summary)
    progress.done(summary)
    return summary


async def _post(client: httpx.AsyncClient, base_url: str, unit: Unit, summary: Summary) -> None:
    response = await client.post(base_url, content=orjson.dumps(unit.bundle), headers={"Content-Type": FHIR_JSON, "Prefer": "return=minimal"})
    if response.status_code == 200:
        for source, entry in zip(unit.sources, response.json().get("entry") or []):
            answer = entry.get("response", {})
            summary.record(source, answer.get("status", "500"), answer.get("outcome"))
        return
    if unit.convertible and response.status_code < 500 and unit.bundle["type"] == "transaction":
        await _post(client, base_url, Unit({**unit.bundle, "type": "batch"}, unit.sources, convertible=False), summary)
        return
    outcome = _json_or_none(response)
    for source in unit.sources or ["(empty Bundle)"]:
        summary.record(source, f"{response.status_code} {response.reason_phrase}", outcome)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _diagnostics(outcome: Any) -> str:
    if isinstance(outcome, dict):
        texts = []
        for issue in (i for i in outcome.get("issue", []) if isinstance(i, dict)):
            where = issue.get("expression") or []
            texts.append(str(issue.get("diagnostics", issue.get("code", ""))) + (f" (at {where[0]})" if where else ""))
        return "; ".join(texts)[:300]
    return ""


class Progress:
    """One line on stderr, redrawn in place on a terminal, every file otherwise."""

    def __init__(self, files: int, stream: TextIO = sys.stderr):
        self.files, self.seen, self.stream = files, 0, stream
        self.interactive = stream.isatty()
        self._last: Path | None = None

    def show(self, path: Path, summary: Summary) -> None:
        if path != self._last:
            self.seen += 1
            self._last = path
        width = 30
        filled = width * self.seen // max(self.files, 1)
        bar = "#" * filled + "." * (width - filled)
        counts = " ".join(f"{k} {summary.counts[k]}" for k in ("created", "updated", "failed"))
        line = f"[{bar}] {self.seen}/{self.files} files, {summary.total} resources: {counts}"
        if self.interactive:
            print(f"\r{line}", end="", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)

    def done(self, summary: Summary) -> None:
        if self.interactive:
            print(file=self.stream)


def report(summary: Summary, stream: TextIO = sys.stdout) -> None:
    counts = ", ".join(f"{k} {summary.counts[k]}" for k in ("created", "updated", "deleted", "failed"))
    print(f"loaded {summary.total} resources: {counts}", file=stream)
    for failure in summary.failures[:MAX_REPORTED_FAILURES]:
        print(f"  FAILED {failure.source}: {failure.status} {failure.diagnostics}", file=stream)
    if len(summary.failures) > MAX_REPORTED_FAILURES:
        print(f"  ... and {len(summary.failures) - MAX_REPORTED_FAILURES} more failures", file=stream)


__all__ = ["Progress", "Summary", "discover", "load", "report", "units"]
