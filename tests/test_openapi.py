"""The OpenAPI document at [base]/openapi.json, and schemathesis fuzzing the API through it
against a real `calipso serve`: no 5xx, and every error answer is an OperationOutcome."""

from __future__ import annotations


import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings

from conformance.server import Served

# The notebook's types and the system interactions: every operation of theirs is fuzzed.
FUZZED_PATHS = ("/metadata", "/", "/_history", "/Patient", "/Communication", "/CarePlan", "/CareTeam", "/Encounter",
                "/Practitioner", "/PractitionerRole", "/RelatedPerson", "/Bundle", "/$export", "/$export-status", "/$export-file",
                "/Group/{id}/$export")
EXAMPLES_PER_OPERATION = 12


def test_the_document_describes_what_the_capability_statement_declares(served: Served) -> None:
    document = httpx.get(f"{served.base}/openapi.json").json()
    statement = httpx.get(f"{served.base}/metadata").json()
    assert document["openapi"].startswith("3.1") and document["servers"] == [{"url": served.base}]
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    searched = {p["name"] for p in document["paths"]["/Patient"]["get"]["parameters"]}
    assert {p["name"] for p in patient["searchParam"]} <= searched
    assert set(document["paths"]["/Patient/{id}"]) == {"get", "put", "patch", "delete"}
    assert len([p for p in document["paths"] if p.endswith("/{id}")]) == len(statement["rest"][0]["resource"])
    assert {"/$export", "/Patient/$export", "/Group/{id}/$export", "/$export-status/{job}", "/$export-file/{job}/{name}"} <= set(document["paths"])


def _fuzzed(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in FUZZED_PATHS)


def test_schemathesis_finds_no_server_error_and_no_bare_error_body(served: Served) -> None:
    schema = schemathesis.openapi.from_url(f"{served.base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if _fuzzed(op.path)]
    assert len(operations) > 40
    failures: list[str] = []
    for operation in operations:
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call(timeout=30)
            where = f"{case.method} {case.formatted_path} -> {response.status_code}"
            if response.status_code >= 500:
                failures.append(f"{where}: {response.text[:200]}")
            elif response.status_code >= 400:
                try:
                    body = response.json()
                except ValueError:
                    body = None
                if not (isinstance(body, dict) and body.get("resourceType") == "OperationOutcome"):
                    failures.append(f"{where}: not an OperationOutcome: {response.text[:200]}")
        fuzz()
    assert failures == [], "\n".join(failures[:20])
