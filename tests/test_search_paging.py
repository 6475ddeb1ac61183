"""Paging that never repeats or skips, and queries that try to hurt the server."""

from __future__ import annotations

import asyncio

import httpx

from tests.search_fixtures import entry, put


async def _walk(client: httpx.AsyncClient, params: dict, write_between=None) -> list[str]:
    seen: list[str] = []
    response = await client.get("/fhir/Communication", params=params)
    while True:
        assert response.status_code == 200, response.text
        bundle = response.json()
        seen += [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
        if write_between:
            await write_between(len(seen))
        following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not following:
            return seen
        response = await client.get(following[0])


async def test_walk_250_results_with_ties_and_writes_in_between(client: httpx.AsyncClient) -> None:
    # 250 entries, 10 per `sent` instant: every page boundary falls inside a tie
    bodies = [entry(f"p{n:03d}", "walker", "transmission", f"2026-11-{1 + n // 10:02d}T10:00:00Z", f"visite {n}", "Practitioner/x")
              for n in range(250)]
    for chunk in range(0, 250, 25):
        await asyncio.gather(*(put(client, body) for body in bodies[chunk:chunk + 25]))
    expected = sorted(b["id"] for b in bodies)

    async def write(count: int) -> None:  # new entries and an update while the client walks
        await put(client, entry(f"new{count:03d}", "walker", "alert", "2026-12-31T10:00:00Z", "nouvelle", "Practitioner/x"))
        await put(client, {**bodies[count % 250], "status": "completed", "payload": [{"contentString": f"relu {count}"}]})

    for params in ({"subject": "walker", "_sort": "-sent", "_count": "7"},
                   {"subject": "walker", "_sort": "sent", "_count": "13"},
                   {"subject": "walker", "category": "transmission", "_count": "20"}):
        seen = await _walk(client, params, write)
        old = [i for i in seen if i.startswith("p")]
        assert len(old) == len(set(old)), f"duplicates with {params}"
        assert sorted(old) == expected, f"missed {set(expected) - set(old)} with {params}"
    ordered = await _walk(client, {"subject": "walker", "category": "transmission", "_sort": "-sent", "_count": "50"})
    sent_days = [int(i[1:]) // 10 for i in ordered]
    assert sent_days == sorted(sent_days, reverse=True)


async def test_cursor_from_elsewhere_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/Communication", params={"_cursor": "bm90LWEtY3Vyc29y", "_sort": "sent"})
    assert response.status_code == 400


async def test_operators_and_regex_in_values_are_data(client: httpx.AsyncClient) -> None:
    await put(client, {"resourceType": "Patient", "id": "p1", "name": [{"family": "Martin"}]})
    await put(client, {"resourceType": "Patient", "id": "p2", "name": [{"family": "a.b*c(d"}]})
    for value in ('{"$gt": ""}', "$where", "{\"$ne\": null}", ".*", "^", "[a-z]+", "\\", "Mar|tin"):
        for name in ("family", "identifier", "general-practitioner", "_id", "family:exact", "family:contains"):
            response = await client.get("/fhir/Patient", params={name: value})
            assert response.status_code in (200, 400), (name, value, response.text)
            ids = [e["resource"]["id"] for e in response.json().get("entry", []) if e.get("search", {}).get("mode") == "match"]
            assert ids == [], (name, value, ids)
    exact = await client.get("/fhir/Patient", params={"family": "a.b*c(d"})
    assert [e["resource"]["id"] for e in exact.json()["entry"]] == ["p2"]
    operator_names = await client.get("/fhir/Patient", params={"$where": "1", "name.$gt": "", "_has": "x"})
    assert operator_names.status_code in (200, 400)


async def test_hostile_queries_are_bounded(client: httpx.AsyncClient) -> None:
    many = ",".join(f"Patient/p{n}" for n in range(10_000))
    response = await client.post("/fhir/Communication/_search", content=f"subject={many}".encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code in (400, 413)  # refused by the OR-value limit or, first, by the body limit
    assert response.json()["issue"][0]["code"] == "too-costly"
    just_over = ",".join(f"p{n}" for n in range(101))
    response = await client.get("/fhir/Communication", params={"subject": just_over})
    assert response.status_code == 400 and response.json()["issue"][0]["code"] == "too-costly"
    deep = "subject:Patient.general-practitioner:Practitioner.organization:Organization.partof:Organization.name"
    response = await client.get("/fhir/Communication", params={deep: "x"})
    assert response.status_code == 400
    for params in ({"_count": "-1"}, {"_count": "lots"}, {"_sort": "payload"}, {"_total": "maybe"}, {"_summary": "some"},
                   {"sent": "yesterday"}, {"_include": "nonsense"}):
        response = await client.get("/fhir/Communication", params=params)
        assert response.status_code == 400, params
    capped = await client.get("/fhir/Communication", params={"_count": "5000"})
    assert capped.status_code == 200


async def test_previous_links_walk_back_exactly(client: httpx.AsyncClient) -> None:
    for n in range(23):
        await put(client, entry(f"b{n:02d}", "back", "transmission", f"2026-11-{1 + n // 4:02d}T10:00:00Z", "x", "Practitioner/x"))
    for params in ({"subject": "back", "_sort": "-sent", "_count": "5"},  # candidates path
                   {"sent": "ge2026-01-01", "_sort": "-sent", "_count": "5"}):  # database path
        pages, response = [], await client.get("/fhir/Communication", params=params)
        while True:
            bundle = response.json()
            pages.append([e["resource"]["id"] for e in bundle["entry"]])
            following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
            if not following:
                break
            response = await client.get(following[0])
        back = [pages[-1]]
        while True:
            previous = [link["url"] for link in bundle["link"] if link["relation"] == "previous"]
            if not previous:
                break
            bundle = (await client.get(previous[0])).json()
            back.append([e["resource"]["id"] for e in bundle["entry"]])
        assert list(reversed(back)) == pages, params
        assert sorted(i for page in pages for i in page) == sorted(f"b{n:02d}" for n in range(23))
