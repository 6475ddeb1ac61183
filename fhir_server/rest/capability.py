"""The CapabilityStatement, generated from the route table and the R4 digest."""

from __future__ import annotations

from typing import Any

from fhir_server import __version__
from fhir_server.bulk.request import EXPORT
from fhir_server.ig import ImplementationGuide
from fhir_server.search.parameters import Parameters
from fhir_server.spec import Spec
from fhir_server.subscriptions.topics import load_topics
from fhir_server.subscriptions.vocabulary import BACKPORT

SOFTWARE_NAME = "calipso"
PUBLISHED = "2026-11-22"
OPERATION_DEFINITION = "http://hl7.org/fhir/OperationDefinition/"
# type -> operations beyond $validate (which every type has), with their R4 definitions
TYPE_OPERATIONS = {
    "Patient": [("everything", "Patient-everything"), ("export", EXPORT["operations"]["patient"])],
    "Group": [("export", EXPORT["operations"]["group"])],
    "ValueSet": [("expand", "ValueSet-expand"), ("validate-code", "ValueSet-validate-code")],
    "CodeSystem": [("lookup", "CodeSystem-lookup")],
    "Subscription": [("status", "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status"),
                     ("events", "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events"),
                     ("get-ws-binding-token",
                      "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-get-ws-binding-token")],
}


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


def _operations(resource_type: str) -> list[dict[str, str]]:
    found = [("validate", "Resource-validate")] + TYPE_OPERATIONS.get(resource_type, [])
    return [{"name": name, "definition": definition if "://" in definition else OPERATION_DEFINITION + definition}
            for name, definition in found]


def _subscription_support(resource: dict[str, Any]) -> dict[str, Any]:
    """The Subscription entry: the Backport IG profile, and the topics a subscriber may name."""
    if resource["type"] != "Subscription":
        return resource
    topics = [{"url": BACKPORT["topicCanonical"], "valueCanonical": url} for url in sorted(load_topics())]
    profiles = [*resource.get("supportedProfile", []), BACKPORT["subscriptionProfile"]]
    return {"extension": topics, **resource, "supportedProfile": profiles}


def capability_statement(
    spec: Spec,
    parameters: Parameters,
    guide: ImplementationGuide,
    base_url: str,
    type_interactions: list[str],
    system_interactions: list[str],
    delete_multiple: bool = False,
    security: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What this server really does: the interactions its routes implement, for every type."""
    types = sorted(spec.resource_types)
    search = _search_capabilities(parameters, types) if "search-type" in type_interactions else {}
    resources = [
        {
            "type": resource_type,
            **({"supportedProfile": guide.profiles_for(resource_type)} if guide.profiles_for(resource_type) else {}),
            "interaction": [{"code": code} for code in type_interactions],
            **{k: v for k, v in search.get(resource_type, {}).items() if v},
            "operation": _operations(resource_type),
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
    resources = [_subscription_support(r) for r in resources]
    rest = {
        "mode": "server",
        **({"security": security} if security else {}),
        "resource": resources,
        "interaction": [{"code": code} for code in system_interactions],
        "operation": [{"name": "export", "definition": EXPORT["operations"]["system"]}],
    }
    statement = instance_statement("calipso FHIR R4 server for the home-care liaison notebook", base_url, [guide.guide["url"]], rest,
                                   instantiates=[EXPORT["capability"]], fhir_version=spec.fhir_version)
    if "patch" in type_interactions:
        statement["patchFormat"] = ["application/json-patch+json", "application/fhir+json"]
    return statement


def instance_statement(description: str, url: str, guides: list[str], rest: dict[str, Any],
                       instantiates: list[str] | None = None, fhir_version: str = "4.0.1") -> dict[str, Any]:
    """The CapabilityStatement of one of calipso's FHIR bases (the R4 API, the CdL base)."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": PUBLISHED,
        "publisher": "calipso",
        "kind": "instance",
        **({"instantiates": instantiates} if instantiates else {}),
        "software": {"name": SOFTWARE_NAME, "version": __version__},
        "implementation": {"description": description, "url": url},
        "fhirVersion": fhir_version,
        "implementationGuide": guides,
        "format": ["json", "application/fhir+json", "xml", "application/fhir+xml"],
        "rest": [rest],
    }


__all__ = ["capability_statement", "instance_statement"]
