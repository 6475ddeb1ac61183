"""Where the data folders of the repository's top level (profiles/, mappings/) are: in a
source checkout, there; in an installed wheel, inside the data packages pyproject.toml maps
them to (fhir_server.guide_profiles, hl7v2_bridge.mappings)."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path


def source_or_installed(source: Path, package: str) -> Path:
    """`source` when it exists (a checkout, an editable install), else the installed package's folder."""
    if source.is_dir():
        return source
    found = find_spec(package)  # a folder without __init__.py: a namespace package, one location
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"neither {source} nor the package {package} is installed")
    return Path(list(found.submodule_search_locations)[0])


__all__ = ["source_or_installed"]
