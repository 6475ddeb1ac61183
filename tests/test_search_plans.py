"""The hot notebook queries use an index: proven with the database's own explain().

A search sends the database its driving clause (equality or `$in` on an indexed field) and
filters, sorts and pages the bounded candidates itself; explain() shows that first query.
"""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.security.policy import ACCESS, SYSTEM
from tests.search_fixtures import IPP, RPPS, load_notebook


def stages(plan: Any) -> list[str]:
    """Every stage name in a winning plan, depth first."""
    found: list[str] = []
    if isinstance(plan, dict):
        if "stage" in plan:
            found.append(plan["stage"])
        for value in plan.values():
            found += stages(value)
    elif isinstance(plan, list):
        for value in plan:
            found += stages(value)
    return found


HOT_QUERIES = [
    ("Communication", [("subject", "Patient/helene"), ("_sort", "-sent"), ("_count", "20")]),
    ("CareTeam", [("participant", "Practitioner/gp-martin"), ("status", "active")]),
    ("Patient", [("identifier", f"{IPP}|IPP0001")]),
    ("Encounter", [("identifier", "urn:oid:1.2.250.1.71.4.2.7.3|V123")]),
    ("CarePlan", [("subject", "Patient/helene"), ("status", "active"), ("_include", "CarePlan:care-team")]),
    ("Patient", [("name", "lefe")]),
]


@pytest.mark.parametrize(("resource_type", "params"), HOT_QUERIES, ids=[f"{t}?{p[0][0]}" for t, p in HOT_QUERIES])
async def test_hot_query_uses_an_index(client, app, resource_type: str, params: list[tuple[str, str]]) -> None:
    await load_notebook(client)
    plan = await app.state.engine.searcher.explain(resource_type, params)
    winning = stages(plan["queryPlanner"]["winningPlan"])
    assert "IXSCAN" in winning, winning
    assert "COLLSCAN" not in winning, winning


async def test_multi_parameter_searches_start_from_an_index(client, app) -> None:
    """Extra parameters are applied to the candidates the index found, never by a collection scan."""
    await load_notebook(client)
    searcher = app.state.engine.searcher
    for resource_type, params in (
        ("Communication", [("subject", "helene"), ("category", "alert"), ("sent", "ge2026-11-01"), ("status:not", "entered-in-error")]),
        ("Patient", [("gender", "female"), ("family:contains", "fev")]),
        ("Communication", [("_id", "e1,e2"), ("_sort", "-sent")]),
    ):
        winning = stages((await searcher.explain(resource_type, params))["queryPlanner"]["winningPlan"])
        assert "IXSCAN" in winning and "COLLSCAN" not in winning, (resource_type, params, winning)


async def test_conditional_lookups_in_one_go_find_what_each_search_finds(client, app) -> None:
    """A transaction looks up its conditional criteria together (one query per type and driving
    field); each answer must be the very set a search of its own returns."""
    await load_notebook(client)
    searcher = app.state.engine.searcher
    ACCESS.set(SYSTEM)  # the engine called directly, as the server's own work (this test's task only)
    lookups = [
        ("Patient", [("identifier", f"{IPP}|IPP0001")]),
        ("Patient", [("identifier", f"{IPP}|IPP0002"), ("gender", "female")]),  # a residual clause that rules jean out
        ("Practitioner", [("identifier", f"{RPPS}|10009876543,{RPPS}|10001234567")]),  # two: the caller sees "several"
        ("Patient", [("identifier", f"{IPP}|nobody")]),
        ("Encounter", [("identifier", "urn:oid:1.2.250.1.71.4.2.7.3|V123")]),
        ("Practitioner", [("identifier", f"{RPPS}|10009876543")]),
        ("Patient", [("identifier", f"{IPP}|")]),
        ("CareTeam", [("participant", "Practitioner/nurse-dubois")]),
        ("CareTeam", [("participant", "Practitioner/nurse-dubois"), ("status", "active")]),
        ("Patient", [("name", "lefe")]),  # no token or reference clause to drive it: searched on its own
        ("Patient", [("no-such-parameter", "x")]),  # an error is left to the search of its own
    ]
    answers = await searcher.matching_keys(lookups, "", 2)
    for (resource_type, params), answer in zip(lookups, answers):
        if answer is None:
            continue
        alone = await searcher.search(resource_type, [*params, ("_count", "2")], True, "")
        assert answer == [f"{d['type']}/{d['id']}" for d in alone.matches], (resource_type, params)
    assert answers[0] == ["Patient/helene"] and answers[1] == [] and len(answers[2]) == 2 and answers[3] == []
    assert answers[4] == ["Encounter/stay-1"] and answers[5] == ["Practitioner/nurse-dubois"]
    assert answers[7] == ["CareTeam/team-helene", "CareTeam/team-jean"] and answers[8] == ["CareTeam/team-helene"]
    assert answers[10] is None
