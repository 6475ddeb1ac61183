"""The hot notebook queries use an index: proven with the database's own explain().

A search sends the database its driving clause (equality or `$in` on an indexed field) and
filters, sorts and pages the bounded candidates itself; explain() shows that first query.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.search_fixtures import IPP, load_notebook


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
