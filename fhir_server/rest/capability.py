"""The CapabilityStatement, generated from the route table and the R4 digest."""

from __future__ import annotations

from typing import Any

from fhir_server import __version__
from fhir_server.spec import Spec

SOFTWARE_NAME = "calipso"
PUBLISHED = "2026-11-22"


def capability_statement(
    spec: Spec, base_url: str, type_interactions: list[str], system_interactions: list[str]
) -> dict[str, Any]:
    """What this server really does: the interactions its routes implement, for every type."""
    resources = [
        {
            "type": resource_type,
            "interaction": [{"code": code} for code in type_interactions],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": False,
            "conditionalRead": "full-support",
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
        }
        for resource_type in sorted(spec.resource_types)
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
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [{"code": code} for code in system_interactions],
            }
        ],
    }


__all__ = ["capability_statement"]
