"""The CapabilityStatement, generated from the route table and the R4 digest."""

from __future__ import annotations

from typing import Any

from fhir_server import __version__
from fhir_server.search.parameters import Parameters
from fhir_server.spec import Spec

SOFTWARE_NAME = "calipso"
PUBLISHED = "2026-11-22"
EVERYTHING = "http://hl7.org/fhir/OperationDefinition/Patient-everything"


def _search_capabilities(parameters: Parameters, resource_types: list[str]) -> dict[str, dict[str, Any]]:
    """searchParam, searchInclude and searchRevInclude per type, from the compiled parameters."""
    found: dict[str, dict[str, Any]] = {t: {"searchInclude": [], "searchRevInclude": []} for t in resource_types}
    for resource_type in resource_types:
        compiled = parameters.for_type(resource_type)
        found[resource_type]["searchParam"] = [
            {"name": code, "type": p.type} for code, p in sorted(compiled.items())
        ]
        for code, p in sorted(compiled.items()):
            if p.type != "reference":
                continue
            found[resource_type]["searchInclude"].append(f"{resource_type}:{code}")
            for target in p.targets:
                if target in found:
                    found[target]["searchRevInclude"].append(f"{resource_type}:{code}")
    return found


def capability_statement(
    spec: Spec,
    parameters: Parameters,
    base_url: str,
    type_interactions: list[str],
    system_interactions: list[str],
    delete_multiple: bool = False,
) -> dict[str, Any]:
    """What this server really does: the interactions its routes implement, for every type."""
    types = sorted(spec.resource_types)
    search = _search_capabilities(parameters, types) if "search-type" in type_interactions else {}
    resources = [
        {
            "type": resource_type,
            "interaction": [{"code": code} for code in type_interactions],
            **{k: v for k, v in search.get(resource_type, {}).items() if v},
            **({"operation": [{"name": "everything", "definition": EVERYTHING}]} if resource_type == "Patient" and search else {}),
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": "search-type" in type_interactions,
            "conditionalRead": "full-support",
            "conditionalUpdate": "search-type" in type_interactions,
            "conditionalDelete": ("multiple" if delete_multiple else "single") if "search-type" in type_interactions else "not-supported",
        }
        for resource_type in types
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": PUBLISHED,
        "publisher": "calipso",
        "kind": "instance",
        "software": {"name": SOFTWARE_NAME, "version": __version__},
        "implementation": {
            "description": "calipso FHIR R4 server for the home-care liaison notebook",
            "url": base_url,
        },
        "fhirVersion": spec.fhir_version,
        "format": ["json", "application/fhir+json"],
        **({"patchFormat": ["application/json-patch+json", "application/fhir+json"]} if "patch" in type_interactions else {}),
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [{"code": code} for code in system_interactions],
            }
        ],
    }


__all__ = ["capability_statement"]
