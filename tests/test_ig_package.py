"""`calipso ig build`: the FHIR package a public validator loads with `-ig`."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

from fhir_server.ig import load_guide
from tests.conftest import project_root
from tests.fhir_schema import schema_errors

guide = load_guide()


def _build(out: Path) -> Path:
    done = subprocess.run([sys.executable, "-m", "fhir_server.cli", "ig", "build", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=project_root())
    assert done.returncode == 0, done.stderr
    target = out / f"{guide.package_id}-{guide.version}.tgz"
    assert f"wrote {target}" in done.stdout
    return target


def test_package_structure(tmp_path: Path) -> None:
    with tarfile.open(_build(tmp_path), "r:gz") as archive:
        names = archive.getnames()
        files = {name: json.loads(archive.extractfile(name).read()) for name in names}  # type: ignore[union-attr]
    assert all(name.startswith("package/") for name in names)
    manifest = files["package/package.json"]
    assert manifest["name"] == "fr.hopitauxchampagnesud.calipso" and manifest["version"] == guide.version
    assert manifest["fhirVersions"] == ["4.0.1"]
    assert manifest["dependencies"] == {"hl7.fhir.r4.core": "4.0.1"}
    assert manifest["canonical"] == guide.canonical
    index = files["package/.index.json"]
    assert index["index-version"] == 1
    listed = {entry["filename"]: entry for entry in index["files"]}
    artifacts = {n.removeprefix("package/"): r for n, r in files.items() if n.count("/") == 1 and not n.endswith(("package.json", ".index.json"))}
    assert set(listed) == set(artifacts)
    for filename, resource in artifacts.items():
        entry = listed[filename]
        assert (entry["resourceType"], entry["id"], entry["url"]) == (resource["resourceType"], resource["id"], resource["url"])
        assert schema_errors(resource) == [], filename
    assert artifacts["StructureDefinition-notebook-entry.json"]["snapshot"]["element"]
    assert listed["StructureDefinition-notebook-entry.json"]["kind"] == "resource"
    assert listed["StructureDefinition-notebook-entry.json"]["type"] == "Communication"
    examples = {n for n in names if n.startswith("package/example/") and not n.endswith(".index.json")}
    assert len(examples) == len(guide.examples) == 8
    example_index = files["package/example/.index.json"]
    assert {e["filename"] for e in example_index["files"]} == {n.removeprefix("package/example/") for n in examples}


def test_package_is_reproducible(tmp_path: Path) -> None:
    first = _build(tmp_path / "a").read_bytes()
    second = _build(tmp_path / "b").read_bytes()
    assert first == second
