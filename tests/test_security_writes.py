"""Writes under the care-team policy (security/writes.py), tried as an attacker would: no token
writes itself into a patient's circle, nothing is written into a notebook the token does not
reach, absent and unreachable answer alike, and nothing is reached where nothing decided it.

Hélène's active team: the GP Martin as médecin traitant (a coordinating role), the nurse
Dubois as home nurse. Jean's active team: the physiotherapist Petit, through his role
`role-petit`. Patient `helene-old` is linked to Hélène (a merged duplicate).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Route

from fhir_server.app import create_app
from fhir_server.rest.routes import FhirRoute, guarded, read
from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.settings import Settings
from tests.conftest import fhir_client, notebook_entry, running

ROLES = "https://fhir.hopitauxchampagnesud.fr/calipso/CodeSystem/care-team-role"
JEAN_KEYS = ("Patient/jean", "entry-jean", "plan-jean", "team-jean", "carer-jean")


def _role(code: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": ROLES, "code": code}]}]


def _circle() -> list[dict[str, Any]]:
    return [
        {"resourceType": "Practitioner", "id": "gp", "name": [{"family": "Martin"}]},
        {"resourceType": "Practitioner", "id": "nurse", "name": [{"family": "Dubois"}]},
        {"resourceType": "Practitioner", "id": "physio", "name": [{"family": "Petit"}]},
        {"resourceType": "PractitionerRole", "id": "role-petit", "practitioner": {"reference": "Practitioner/physio"}},
        {"resourceType": "Patient", "id": "helene", "name": [{"family": "Lefèvre"}]},
        {"resourceType": "Patient", "id": "jean", "name": [{"family": "Lefebvre"}]},
        {"resourceType": "Patient", "id": "helene-old", "name": [{"family": "Lefèvre"}],
         "link": [{"other": {"reference": "Patient/helene"}, "type": "replaced-by"}]},
        {"resourceType": "RelatedPerson", "id": "carer-jean", "patient": {"reference": "Patient/jean"}},
        {"resourceType": "CareTeam", "id": "team-helene", "status": "active", "subject": {"reference": "Patient/helene"},
         "participant": [{"member": {"reference": "Practitioner/gp"}, "role": _role("general-practitioner")},
                         {"member": {"reference": "Practitioner/nurse"}, "role": _role("home-nurse")}]},
        {"resourceType": "CareTeam", "id": "team-jean", "status": "active", "subject": {"reference": "Patient/jean"},
         "participant": [{"member": {"reference": "PractitionerRole/role-petit"}, "role": _role("physiotherapist")}]},
        {"resourceType": "CarePlan", "id": "plan-helene", "status": "active", "intent": "plan", "subject": {"reference": "Patient/helene"}},
        {"resourceType": "CarePlan", "id": "plan-jean", "status": "active", "intent": "plan", "subject": {"reference": "Patient/jean"}},
        {**notebook_entry("helene"), "id": "entry-helene"},
        {**notebook_entry("jean"), "id": "entry-jean"},
        {"resourceType": "RelatedPerson", "id": "daughter", "patient": {"reference": "Patient/helene"}},
    ]


@pytest.fixture
async def circle(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, dict[str, dict[str, str]]]]:
    """The app, a client, and the headers of each token kind."""
    settings = replace(settings, auth=True, dev_issuer=True, data_dir=tmp_path)
    async with running(create_app(settings)) as app, fhir_client(app) as client:
        issuer: DevIssuer = app.state.dev_issuer
        aud = settings.auth_audience

        def bearer(*args: Any, **kwargs: Any) -> dict[str, str]:
            return {"Authorization": f"Bearer {issuer.token(*args, aud, **kwargs)}"}

        tokens = {
            "system": bearer("feed", "system/*.cruds"),
            "gp": bearer("gp", "user/*.cruds", fhir_user="Practitioner/gp"),
            "nurse": bearer("nurse", "user/*.cruds", fhir_user="Practitioner/nurse"),
            "patient": bearer("helene", "patient/*.cruds", patient="helene"),
            "outsider": bearer("moreau", "user/*.cruds", fhir_user="Practitioner/moreau"),
            "caregiver": bearer("daughter", "user/*.cruds", fhir_user="RelatedPerson/daughter"),
        }
        for resource in _circle():
            answer = await client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource, headers=tokens["system"])
            assert answer.status_code == 201, answer.text
        yield app, client, tokens


# -- each observation of the trust issue, as it was reproduced --------------------------------


async def test_a_care_team_written_by_a_member_does_not_open_another_patient(circle) -> None:
    app, client, tokens = circle
    nurse = tokens["nurse"]
    team = {"resourceType": "CareTeam", "status": "active", "subject": {"reference": "Patient/jean"},
            "participant": [{"member": {"reference": "Practitioner/nurse"}}, {"member": {"reference": "Patient/helene"}}]}
    assert (await client.post("/fhir/CareTeam", json=team, headers=nurse)).status_code == 403
    moved = {**_circle()[8], "subject": {"reference": "Patient/jean"}}  # her own team, turned to Jean
    assert (await client.put("/fhir/CareTeam/team-helene", json=moved, headers=nurse)).status_code == 403
    assert (await client.put("/fhir/CareTeam/team-helene", json=moved, headers=tokens["gp"])).status_code == 403
    assert (await client.get("/fhir/Patient/jean", headers=nurse)).status_code == 404
    assert (await client.get("/fhir/Communication", params={"subject": "Patient/jean"}, headers=nurse)).json().get("entry") is None


async def test_only_a_coordinator_changes_the_circle(circle) -> None:
    app, client, tokens = circle
    widened = _circle()[8]
    widened["participant"].append({"member": {"reference": "Practitioner/moreau"}, "role": _role("pharmacist")})
    assert (await client.put("/fhir/CareTeam/team-helene", json=widened, headers=tokens["nurse"])).status_code == 403
    assert (await client.get("/fhir/Patient/helene", headers=tokens["outsider"])).status_code == 404
    assert (await client.put("/fhir/CareTeam/team-helene", json=widened, headers=tokens["gp"])).status_code == 200
    assert (await client.get("/fhir/Patient/helene", headers=tokens["outsider"])).status_code == 200  # the GP let her in
    carer = {"resourceType": "RelatedPerson", "patient": {"reference": "Patient/helene"}, "name": [{"family": "Lefèvre"}]}
    assert (await client.post("/fhir/RelatedPerson", json=carer, headers=tokens["nurse"])).status_code == 403
    assert (await client.post("/fhir/RelatedPerson", json=carer, headers=tokens["gp"])).status_code == 201


async def test_a_practitioner_role_cannot_be_taken_over(circle) -> None:
    app, client, tokens = circle
    nurse = tokens["nurse"]
    taken = {"resourceType": "PractitionerRole", "id": "role-petit", "practitioner": {"reference": "Practitioner/nurse"}}
    assert (await client.put("/fhir/PractitionerRole/role-petit", json=taken, headers=nurse)).status_code == 403
    patch = [{"op": "replace", "path": "/practitioner/reference", "value": "Practitioner/nurse"}]
    patched = await client.patch("/fhir/PractitionerRole/role-petit", json=patch,
                                 headers={**nurse, "Content-Type": "application/json-patch+json"})
    assert patched.status_code == 403
    assert (await client.get("/fhir/Patient/jean", headers=nurse)).status_code == 404
    stored = (await client.get("/fhir/PractitionerRole/role-petit", headers=tokens["system"])).json()
    assert stored["practitioner"]["reference"] == "Practitioner/physio"


async def test_no_entry_into_a_notebook_out_of_reach(circle) -> None:
    app, client, tokens = circle
    entry = {**notebook_entry("jean"), "recipient": [{"reference": "Patient/helene"}]}
    assert (await client.post("/fhir/Communication", json=entry, headers=tokens["nurse"])).status_code == 403
    jean = await client.get("/fhir/Communication", params={"subject": "Patient/jean", "_total": "accurate"}, headers=tokens["system"])
    assert jean.json()["total"] == 1
    own = await client.post("/fhir/Communication", json=notebook_entry("helene"), headers=tokens["nurse"])
    assert own.status_code == 201  # her own patient's notebook: written


async def test_everything_returns_only_what_a_read_would(circle) -> None:
    app, client, tokens = circle
    nurse = tokens["nurse"]
    assert (await client.get("/fhir/Patient/helene-old", headers=nurse)).status_code == 404
    everything = (await client.get("/fhir/Patient/helene/$everything", headers=nurse)).json()
    found = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in everything["entry"]}
    assert "Patient/helene-old" not in found and {"Patient/helene", "Communication/entry-helene"} <= found
    full = (await client.get("/fhir/Patient/helene/$everything", headers=tokens["system"])).json()
    assert "Patient/helene-old" in {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in full["entry"]}


async def test_unreachable_and_absent_answer_alike(circle) -> None:
    app, client, tokens = circle
    nurse = tokens["nurse"]
    body = {**notebook_entry("helene")}

    async def answer(method: str, resource_id: str) -> tuple[int, str]:
        response = await client.request(method, f"/fhir/Communication/{resource_id}", headers=nurse,
                                        json={**body, "id": resource_id} if method == "PUT" else None)
        issue = response.json()["issue"][0]
        return response.status_code, issue["diagnostics"].replace(resource_id, "ID")

    for method in ("PUT", "DELETE"):
        assert await answer(method, "entry-jean") == await answer(method, "never-written")
        assert (await answer(method, "entry-jean"))[0] == 404
    stored = await client.get("/fhir/Communication/entry-jean", headers=tokens["system"])
    assert stored.status_code == 200 and stored.json()["meta"]["versionId"] == "1"


async def test_a_route_that_declares_nothing_is_refused(settings: Settings) -> None:
    app = create_app(settings)  # authentication off: every declared route is open
    app.router.routes.insert(0, Route("/fhir/undeclared/{type}/{id}", guarded(FhirRoute("/", "GET", read, None)), methods=["GET"]))
    async with running(app), fhir_client(app) as client:
        assert (await client.put("/fhir/Patient/p", json={"resourceType": "Patient", "id": "p"})).status_code == 201
        assert (await client.get("/fhir/Patient/p")).status_code == 200
        refused = await client.get("/fhir/undeclared/Patient/p")
        assert refused.status_code == 403 and "declares no access rule" in refused.text


async def test_work_outside_a_request_reaches_nothing_unless_it_says_so(app: FastAPI, client: httpx.AsyncClient) -> None:
    from fhir_server.engine import writes
    from fhir_server.outcome import FhirError
    from fhir_server.security.policy import SYSTEM, acting_as

    assert (await client.put("/fhir/Patient/p", json={"resourceType": "Patient", "id": "p"})).status_code == 201
    engine = app.state.engine
    with pytest.raises(FhirError) as unread:
        await engine.read("Patient", "p")
    assert unread.value.status == 404
    assert (await engine.searcher.search("Patient", [], True, "")).matches == []
    with pytest.raises(FhirError) as unwritten:
        await writes.create(engine, "Patient", {"resourceType": "Patient"})
    assert unwritten.value.status == 403
    with acting_as(SYSTEM):
        assert (await engine.read("Patient", "p")).id == "p"


# -- the deny matrix --------------------------------------------------------------------------


def _jean_resource(resource_type: str) -> dict[str, Any]:
    """A body of each type filed under Jean (and under Hélène where the type allows a second patient)."""
    return {
        "Communication": {**notebook_entry("jean"), "recipient": [{"reference": "Patient/helene"}]},
        "CarePlan": {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/jean"}},
        "CareTeam": {"resourceType": "CareTeam", "status": "active", "subject": {"reference": "Patient/jean"},
                     "participant": [{"member": {"reference": "Patient/helene"}}]},
        "Patient": {"resourceType": "Patient", "name": [{"family": "X"}], "link": [{"other": {"reference": "Patient/jean"}, "type": "seealso"}]},
        "RelatedPerson": {"resourceType": "RelatedPerson", "patient": {"reference": "Patient/jean"}},
    }[resource_type]


STORED = {"Communication": "entry-jean", "CarePlan": "plan-jean", "CareTeam": "team-jean", "Patient": "jean", "RelatedPerson": "carer-jean"}


def _attempts(resource_type: str) -> list[tuple[str, str, str, Any, dict[str, str]]]:
    """Every way to write something of Jean's: (name, method, url, body, extra headers)."""
    body, stored = _jean_resource(resource_type), STORED[resource_type]
    patch = [{"op": "replace", "path": "/id", "value": stored}]
    json_patch = {"Content-Type": "application/json-patch+json"}
    criteria = f"_id={stored}"
    entry = lambda method, url, resource=None: {"request": {"method": method, "url": url}, **({"resource": resource} if resource else {})}  # noqa: E731
    bundle = lambda *entries: {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}  # noqa: E731
    return [
        ("create", "POST", resource_type, body, {}),
        ("conditional-create", "POST", resource_type, body, {"If-None-Exist": "_id=nothing-like-it"}),
        ("update", "PUT", f"{resource_type}/{stored}", {**body, "id": stored}, {}),
        ("update-new-id", "PUT", f"{resource_type}/fresh-{resource_type.lower()}", {**body, "id": f"fresh-{resource_type.lower()}"}, {}),
        ("conditional-update", "PUT", f"{resource_type}?{criteria}", {**body, "id": stored}, {}),
        ("patch", "PATCH", f"{resource_type}/{stored}", patch, json_patch),
        ("conditional-patch", "PATCH", f"{resource_type}?{criteria}", patch, json_patch),
        ("delete", "DELETE", f"{resource_type}/{stored}", None, {}),
        ("conditional-delete", "DELETE", f"{resource_type}?{criteria}", None, {}),
        ("transaction-create", "POST", "", bundle(entry("POST", resource_type, body)), {}),
        ("transaction-update", "POST", "", bundle(entry("PUT", f"{resource_type}/{stored}", {**body, "id": stored})), {}),
        ("transaction-delete", "POST", "", bundle(entry("DELETE", f"{resource_type}/{stored}")), {}),
        ("batch-update", "POST", "", {**bundle(entry("PUT", f"{resource_type}/{stored}", {**body, "id": stored})), "type": "batch"}, {}),
    ]


def _reads_of_jean() -> list[str]:
    return [
        "Patient/jean", "Patient/jean/_history", "Patient/jean/_history/1", "Patient/jean/$everything",
        "Patient/jean/Communication", "Communication/entry-jean", "Communication/entry-jean/_history/1",
        "Communication?subject=Patient/jean&_total=accurate", "Communication?_include=Communication:subject&_count=100",
        "Patient?_revinclude=Communication:subject&_count=100", "CareTeam?_include=CareTeam:participant&_count=100",
        "Patient?_has:Communication:subject:status=completed", "Communication?subject.name=Lefebvre",
        "CarePlan?_revinclude:iterate=CareTeam:subject", "RelatedPerson?patient=Patient/jean", "CareTeam?patient=jean",
        "?_type=Patient,Communication,CareTeam,CarePlan,RelatedPerson&_count=100", "Patient/helene-old/$everything",
    ]


def _leaked(body: Any) -> list[str]:
    """Resources of Jean's in an answer (an OperationOutcome naming the id asked for is not one)."""
    if not isinstance(body, dict) or body.get("resourceType") == "OperationOutcome":
        return []
    resources = [e.get("resource", {}) for e in body.get("entry", [])] if body.get("resourceType") == "Bundle" else [body]
    return [f"{r.get('resourceType')}/{r.get('id')}" for r in resources
            if any(key in f"{r.get('resourceType')}/{r.get('id')}" or key in str(r.get("subject")) or key in str(r.get("patient"))
                   for key in JEAN_KEYS)]


async def _jean_state(client: httpx.AsyncClient, system: dict[str, str]) -> list[tuple[str, str]]:
    """Every version of everything filed under Jean, as the system token sees it."""
    everything = (await client.get("/fhir/Patient/jean/$everything", params={"_count": "1000"}, headers=system)).json()
    return sorted((e["fullUrl"].rsplit("/fhir/", 1)[1], e["resource"]["meta"]["versionId"]) for e in everything.get("entry", []))


async def test_deny_matrix(circle) -> None:
    """Tokens that do not reach Jean x notebook types x every write and read form: no write
    lands in his compartment, no answer carries anything of his."""
    app, client, tokens = circle
    before = await _jean_state(client, tokens["system"])
    assert len(before) == 5
    landed, leaked = [], []
    for name in ("nurse", "gp", "patient", "outsider", "caregiver"):
        headers = tokens[name]
        for resource_type in STORED:
            for attempt, method, url, body, extra in _attempts(resource_type):
                response = await client.request(method, f"/fhir/{url}".rstrip("/"), json=body, headers={**headers, **extra})
                outcome = response.json()
                refused = response.status_code >= 400 or (
                    outcome.get("type", "").endswith("response") and all(e["response"]["status"][:1] == "4" for e in outcome["entry"])
                ) or "Nothing matched" in str(outcome.get("issue"))  # a conditional delete finding nothing it may see
                if not refused:
                    landed.append((name, resource_type, attempt, response.status_code))
        for url in _reads_of_jean():
            response = await client.get(f"/fhir/{url}".replace("fhir/?", "fhir?"), headers=headers)
            if found := _leaked(response.json()):
                leaked.append((name, url, found))
    assert landed == []
    assert leaked == []
    assert await _jean_state(client, tokens["system"]) == before
