"""`calipso ig build`: the guide as a FHIR NPM package that validators load (`-ig x.tgz`).

Layout (FHIR package spec): `package/package.json`, `package/.index.json`, one file per
artifact named `Type-id.json`, and examples under `package/example/` with their own index.
The archive is reproducible: fixed order, fixed timestamps.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path
from typing import Any

import orjson

from fhir_server.ig import ImplementationGuide

CORE_PACKAGE = {"hl7.fhir.r4.core": "4.0.1"}
FIXED_MTIME = 0
INDEX_KEYS = ("url", "version", "kind", "type", "supplements", "content")


def package_json(guide: ImplementationGuide) -> dict[str, Any]:
    ig = guide.guide
    return {
        "name": guide.package_id,
        "version": guide.version,
        "type": "fhir.ig",
        "canonical": guide.canonical,
        "url": guide.canonical,
        "title": ig.get("title", ig["name"]),
        "description": ig.get("description", ""),
        "author": ig.get("publisher", ""),
        "license": ig.get("license", ""),
        "fhirVersions": ig["fhirVersion"],
        "jurisdiction": "urn:iso:std:iso:3166#FR",
        "dependencies": dict(CORE_PACKAGE),
    }


def index_json(files: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    entries = []
    for filename, resource in files:
        entry = {"filename": filename, "resourceType": resource["resourceType"], "id": resource["id"]}
        entry.update({k: resource[k] for k in INDEX_KEYS if isinstance(resource.get(k), str)})
        entries.append(entry)
    return {"index-version": 1, "files": entries}


def package_files(guide: ImplementationGuide) -> dict[str, bytes]:
    """Archive path -> bytes, in archive order."""
    artifacts = [(f"{r['resourceType']}-{r['id']}.json", r) for r in guide.artifacts]
    examples = [(f"{r['resourceType']}-{r['id']}.json", r) for r in guide.examples]
    files: dict[str, bytes] = {"package/package.json": _dump(package_json(guide))}
    files["package/.index.json"] = _dump(index_json(artifacts))
    for name, resource in artifacts:
        files[f"package/{name}"] = _dump(resource)
    files["package/example/.index.json"] = _dump(index_json(examples))
    for name, resource in examples:
        files[f"package/example/{name}"] = _dump(resource)
    return files


def write_package(guide: ImplementationGuide, out_dir: Path) -> Path:
    """Write `<out_dir>/<packageId>-<version>.tgz` and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{guide.package_id}-{guide.version}.tgz"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in package_files(guide).items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), FIXED_MTIME, 0o644
            archive.addfile(info, io.BytesIO(data))
    target.write_bytes(gzip.compress(buffer.getvalue(), mtime=FIXED_MTIME))  # no timestamp in the gzip header
    return target


def _dump(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2)


__all__ = ["package_files", "package_json", "write_package"]
