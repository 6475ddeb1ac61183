"""HTTP headers and formats: conditional reads, If-Match, Prefer, _format, _pretty, XML refusal."""

from __future__ import annotations

from email.utils import format_datetime, parsedate_to_datetime
from datetime import timedelta

import httpx
import orjson

from tests.conftest import notebook_patient


async def _created(client: httpx.AsyncClient) -> httpx.Response:
    response = await client.post("/fhir/Patient", json=notebook_patient())
    assert response.status_code == 201
    return response


async def test_if_none_match_gives_304_only_for_current_version(client: httpx.AsyncClient) -> None:
    created = await _created(client)
    url = f"/fhir/Patient/{created.json()['id']}"
    same = await client.get(url, headers={"If-None-Match": 'W/"1"'})
    assert same.status_code == 304 and same.content == b""
    assert same.headers["etag"] == 'W/"1"'
    other = await client.get(url, headers={"If-None-Match": 'W/"7"'})
    assert other.status_code == 200


async def test_if_modified_since(client: httpx.AsyncClient) -> None:
    created = await _created(client)
    url = f"/fhir/Patient/{created.json()['id']}"
    last_modified = parsedate_to_datetime(created.headers["last-modified"])
    later = format_datetime(last_modified + timedelta(seconds=5), usegmt=True)
    earlier = format_datetime(last_modified - timedelta(seconds=5), usegmt=True)
    assert (await client.get(url, headers={"If-Modified-Since": later})).status_code == 304
    assert (await client.get(url, headers={"If-Modified-Since": earlier})).status_code == 200
    assert (await client.get(url, headers={"If-Modified-Since": "not a date"})).status_code == 200


async def test_if_match_stale_gives_412_and_changes_nothing(client: httpx.AsyncClient) -> None:
    created = (await _created(client)).json()
    url = f"/fhir/Patient/{created['id']}"
    ok = await client.put(url, json={**created, "gender": "male"}, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = await client.put(url, json={**created, "gender": "other"}, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["issue"][0]["code"] == "conflict"
    current = (await client.get(url)).json()
    assert current["gender"] == "male" and current["meta"]["versionId"] == "2"
    garbage = await client.put(url, json=created, headers={"If-Match": "yesterday"})
    assert garbage.status_code == 412
    unknown = await client.put("/fhir/Patient/zz", json=notebook_patient(id="zz"), headers={"If-Match": 'W/"1"'})
    assert unknown.status_code == 412
    assert (await client.get("/fhir/Patient/zz")).status_code == 404


async def test_if_match_on_delete(client: httpx.AsyncClient) -> None:
    created = (await _created(client)).json()
    url = f"/fhir/Patient/{created['id']}"
    assert (await client.delete(url, headers={"If-Match": 'W/"3"'})).status_code == 412
    assert (await client.get(url)).status_code == 200
    assert (await client.delete(url, headers={"If-Match": 'W/"1"'})).status_code == 200


async def test_prefer_return(client: httpx.AsyncClient) -> None:
    minimal = await client.post("/fhir/Patient", json=notebook_patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["location"] and minimal.headers["etag"] == 'W/"1"'
    outcome = await client.post("/fhir/Patient", json=notebook_patient(), headers={"Prefer": "return=OperationOutcome"})
    assert outcome.status_code == 201
    assert outcome.json()["resourceType"] == "OperationOutcome"
    assert outcome.json()["issue"][0]["severity"] == "information"
    full = await client.post("/fhir/Patient", json=notebook_patient(), headers={"Prefer": "return=representation"})
    assert full.json()["resourceType"] == "Patient"


async def test_plain_json_is_accepted_and_format_parameter(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/fhir/Patient",
        content=orjson.dumps(notebook_patient()),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    assert response.status_code == 201
    url = f"/fhir/Patient/{response.json()['id']}"
    for value in ("json", "application/fhir+json", "application/json"):
        assert (await client.get(url, params={"_format": value})).status_code == 200
    assert (await client.get(url, headers={"Accept": "*/*"})).status_code == 200


async def test_pretty(client: httpx.AsyncClient) -> None:
    created = (await _created(client)).json()
    pretty = await client.get(f"/fhir/Patient/{created['id']}", params={"_pretty": "true"})
    assert pretty.content.startswith(b'{\n  "resourceType": "Patient"')
    assert pretty.json() == created
    compact = await client.get(f"/fhir/Patient/{created['id']}")
    assert b"\n" not in compact.content


async def test_fhir_xml_in_and_out_other_formats_refused(client: httpx.AsyncClient) -> None:
    """Every body the client receives is checked against the R4 JSON Schema (conftest), XML ones
    once read back."""
    from fhir_server.spec import load_spec
    from fhir_server.xml_format import XmlFormat

    xml = XmlFormat(load_spec())
    created = (await _created(client)).json()
    url = f"/fhir/Patient/{created['id']}"
    for params, headers in (({"_format": "xml"}, {}), ({}, {"Accept": "application/fhir+xml"}), ({}, {"Accept": "application/xml, */*"})):
        response = await client.get(url, params=params, headers=headers)
        assert response.status_code == 200 and response.headers["content-type"].startswith("application/fhir+xml")
        assert xml.from_xml(response.content) == created
    assert (await client.get(url, params={"_format": "text/turtle"})).status_code == 406
    missing = await client.get("/fhir/Patient/nobody", headers={"Accept": "application/fhir+xml"})
    assert missing.status_code == 404 and xml.from_xml(missing.content)["resourceType"] == "OperationOutcome"
    search = await client.get("/fhir/Patient", params={"_format": "xml", "_id": created["id"]})
    assert xml.from_xml(search.content)["entry"][0]["resource"] == created

    posted = await client.post("/fhir/Patient", content=xml.to_xml(notebook_patient()), headers={"Content-Type": "application/fhir+xml"})
    assert posted.status_code == 201, posted.text
    assert posted.json()["name"] == notebook_patient()["name"]
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0e1d6a0e-8c33-4b0e-9f7e-6a1b2c3d4e5f", "resource": notebook_patient(), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Communication", "status": "completed", "subject": {"reference": "urn:uuid:0e1d6a0e-8c33-4b0e-9f7e-6a1b2c3d4e5f"}},
         "request": {"method": "POST", "url": "Communication"}}]}
    applied = await client.post("/fhir", content=xml.to_xml(transaction),
                                headers={"Content-Type": "application/fhir+xml", "Accept": "application/fhir+xml"})
    assert applied.status_code == 200, applied.text
    answer = xml.from_xml(applied.content)
    assert answer["type"] == "transaction-response" and [e["response"]["status"][:3] for e in answer["entry"]] == ["201", "201"]
    broken = await client.post("/fhir/Patient", content=b"<Patient xmlns='http://hl7.org/fhir'><id value='x'/>",
                               headers={"Content-Type": "application/fhir+xml"})
    assert broken.status_code == 400
    form = await client.post("/fhir/Patient", content=b"a=b", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415


async def test_a_search_page_has_an_etag_that_says_when_it_changed(client: httpx.AsyncClient) -> None:
    """A polling client (the notebook app) sends the page's ETag back: 304 while nothing on the
    page changed, whatever the Bundle's own id and time; a new or changed entry, a new page."""
    from tests.conftest import notebook_entry

    patient = (await client.post("/fhir/Patient", json=notebook_patient())).json()["id"]
    first = (await client.post("/fhir/Communication", json=notebook_entry(patient))).json()
    query = {"subject": f"Patient/{patient}", "_sort": "-sent", "_revinclude": "Communication:in-response-to"}
    page = await client.get("/fhir/Communication", params=query)
    etag = page.headers["etag"]
    assert etag.startswith('W/"')
    again = await client.get("/fhir/Communication", params=query, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["etag"] == etag and again.content == b""
    reply = {**notebook_entry(patient, "Vu."), "inResponseTo": [{"reference": f"Communication/{first['id']}"}]}
    assert (await client.post("/fhir/Communication", json=reply)).status_code == 201
    changed = await client.get("/fhir/Communication", params=query, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    corrected = {**first, "status": "entered-in-error"}
    assert (await client.put(f"/fhir/Communication/{first['id']}", json=corrected)).status_code == 200
    latest = changed.headers["etag"]
    assert (await client.get("/fhir/Communication", params=query, headers={"If-None-Match": latest})).status_code == 200
