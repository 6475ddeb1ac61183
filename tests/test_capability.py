"""GET /metadata: a CapabilityStatement generated from what is really implemented."""

from __future__ import annotations

import httpx
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from fhir_server.rest.routes import ROUTES


async def test_capability_statement_describes_this_server(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/metadata")
    assert response.status_code == 200
    statement = response.json()
    CapabilityStatement.model_validate(statement)  # second opinion beside the JSON Schema hook
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"
    assert statement["implementation"]["url"] == "http://calipso.test/fhir"
    assert "application/fhir+json" in statement["format"]
    assert statement["patchFormat"] == ["application/json-patch+json", "application/fhir+json"]
    rest = statement["rest"][0]
    assert [i["code"] for i in rest["interaction"]] == ["history-system", "transaction", "batch", "search-system"]
    by_type = {r["type"]: r for r in rest["resource"]}
    assert len(by_type) == 146  # R4 4.0.1: no R4B SubscriptionStatus
    assert {"Communication", "CarePlan", "CareTeam", "Patient", "RelatedPerson"} <= set(by_type)
    codes = {i["code"] for i in by_type["Communication"]["interaction"]}
    assert codes == {"read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type"}
    params = {p["name"]: p["type"] for p in by_type["Communication"]["searchParam"]}
    assert params["subject"] == "reference" and params["sent"] == "date" and params["_lastUpdated"] == "date"
    assert "Communication:sender" in by_type["Communication"]["searchInclude"]
    assert "Communication:subject" in by_type["Patient"]["searchRevInclude"]
    assert by_type["Patient"]["conditionalCreate"] is True and by_type["Patient"]["conditionalDelete"] == "single"


async def test_every_advertised_interaction_has_a_route() -> None:
    declared = {code for r in ROUTES if r.interaction for code in r.interaction.split()}
    assert declared == {
        "capabilities", "read", "vread", "update", "patch", "delete", "history-instance", "history-type",
        "history-system", "create", "search-type", "search-system", "transaction", "batch",
    }
