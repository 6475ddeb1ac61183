"""The liaison-notebook Implementation Guide, as read from `profiles/`.

`profiles/` holds one JSON file per artifact (StructureDefinitions with differentials,
CodeSystems, ValueSets, a ConceptMap, SearchParameters, the ImplementationGuide), valid
examples in `profiles/examples/` and deliberately broken ones in `profiles/invalid/`. The
canonical base is stated once, by the ImplementationGuide's `url`; every artifact's url
starts with it (the tests hold us to that).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from fhir_server.data_folders import source_or_installed
from fhir_server.ig.snapshot import SnapshotError, generate_snapshot
from fhir_server.ig.terminology import Concept, Terminology
from fhir_server.spec import base_definitions

PROFILES_DIR = source_or_installed(Path(__file__).resolve().parents[2] / "profiles", "fhir_server.guide_profiles")
GUIDE_PATH_SUFFIX = "/ImplementationGuide/"
CONFORMANCE_TYPES = ("StructureDefinition", "CodeSystem", "ValueSet", "ConceptMap", "SearchParameter", "ImplementationGuide")


@dataclass(frozen=True, eq=False)
class ImplementationGuide:
    """Our artifacts with generated snapshots, their terminology and their examples."""

    guide: dict[str, Any]
    artifacts: list[dict[str, Any]]  # every conformance resource, the guide included, snapshots filled in
    examples: list[dict[str, Any]]
    terminology: Terminology
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)  # url -> StructureDefinition

    @property
    def canonical(self) -> str:
        """The canonical base every artifact url starts with."""
        url: str = self.guide["url"]
        return url[: url.index(GUIDE_PATH_SUFFIX)]

    @property
    def package_id(self) -> str:
        return str(self.guide["packageId"])

    @property
    def version(self) -> str:
        return str(self.guide["version"])

    def search_parameters(self) -> list[dict[str, Any]]:
        """Our SearchParameters, which the search engine adds to the R4 ones."""
        return [a for a in self.artifacts if a["resourceType"] == "SearchParameter"]

    def profiles_for(self, resource_type: str) -> list[str]:
        """Urls of our profiles on a resource type (for the CapabilityStatement)."""
        return [url for url, sd in self.profiles.items() if sd["type"] == resource_type]


def read_json_folder(folder: Path) -> list[dict[str, Any]]:
    """Every `*.json` resource of a folder, in name order (not recursive)."""
    resources = []
    for path in sorted(folder.glob("*.json")):
        resource = orjson.loads(path.read_bytes())
        if isinstance(resource, dict) and "resourceType" in resource:
            resources.append(resource)
    return resources


@cache
def load_guide(folder: Path = PROFILES_DIR) -> ImplementationGuide:
    """Read `profiles/`, generate the snapshots, index the terminology (once per process)."""
    sources = read_json_folder(folder)
    guides = [r for r in sources if r["resourceType"] == "ImplementationGuide"]
    if len(guides) != 1:
        raise ValueError(f"{folder} must hold exactly one ImplementationGuide, found {len(guides)}")
    artifacts, profiles = _with_snapshots(sources)
    examples = read_json_folder(folder / "examples")
    return ImplementationGuide(
        guide=guides[0],
        artifacts=artifacts,
        examples=examples,
        terminology=Terminology(artifacts),
        profiles=profiles,
    )


@cache
def load_package_folder(folder: Path) -> ImplementationGuide:
    """Definitions published without a guide resource of their own (R4's vital signs profiles):
    the folder's `package.json` (a FHIR package manifest) names them; snapshots generated as for
    our guide."""
    package = orjson.loads((folder / "package.json").read_bytes())
    artifacts, profiles = _with_snapshots(read_json_folder(folder))
    guide = {"url": f"{package['canonical']}{GUIDE_PATH_SUFFIX}{package['name']}", "packageId": package["name"],
             "version": package["version"]}
    return ImplementationGuide(guide=guide, artifacts=artifacts, examples=[], terminology=Terminology(artifacts), profiles=profiles)


def _with_snapshots(sources: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The artifacts, StructureDefinitions with their snapshots; the profiles by url."""
    definitions = base_definitions()
    artifacts = []
    profiles = {}
    for resource in sources:
        if resource["resourceType"] == "StructureDefinition":
            resource = generate_snapshot(resource, definitions)
            profiles[resource["url"]] = resource
        artifacts.append(resource)
    return artifacts, profiles


__all__ = [
    "CONFORMANCE_TYPES",
    "Concept",
    "ImplementationGuide",
    "PROFILES_DIR",
    "SnapshotError",
    "Terminology",
    "load_guide",
    "load_package_folder",
    "read_json_folder",
]
