"""Newest-first pages read through a window of the sort index (fhir_server/storage/windows.py).

Windows are sized from the pages served before, so each test first serves enough pages for the
estimates to exist, then checks that windows were really used (or really missed) and that every
page is exactly the one the whole search gives: same rows, same order, same links.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from fhir_server.storage.windows import MIN_OBSERVATIONS, WindowEstimates, sort_indexes
from fhir_server.storage.store import INDEXES, RESOURCES
from tests.search_fixtures import entry, put

NOW = datetime.now(timezone.utc).replace(microsecond=0)
ANCHOR = datetime(2026, 11, 22, tzinfo=timezone.utc)  # of the estimates' own tests
SHAPE = ("Communication", ("subject",), (("so.sent", -1), ("_id", -1)), True)


def _instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _notebook(client: httpx.AsyncClient, patient: str, count: int) -> list[dict]:
    """`count` entries: three per instant (ties), two in the future, five with no `sent`."""
    bodies = []
    for n in range(count):
        sent = NOW - timedelta(hours=5 * (n // 3)) if n >= 2 else NOW + timedelta(days=3 + n)
        body = entry(f"{patient}-{n:03d}", patient, "alert" if n % 4 == 0 else "transmission", _instant(sent),
                     f"visite {n}", "Practitioner/nurse")
        if n % 29 == 7:
            del body["sent"]
        bodies.append(body)
    for chunk in range(0, count, 20):
        await asyncio.gather(*(put(client, body) for body in bodies[chunk:chunk + 20]))
    return bodies


async def _entries(client: httpx.AsyncClient, patient: str, instants: list[datetime]) -> list[dict]:
    """One entry per instant, written one by one."""
    bodies = [entry(f"{patient}-{n:02d}", patient, "transmission", _instant(moment), "visite", "Practitioner/nurse")
              for n, moment in enumerate(instants)]
    for body in bodies:
        await put(client, body)
    return bodies


def _newest_first(bodies: list[dict], kind: str | None = None) -> list[str]:
    """What `_sort=-sent` must give: newest first, ties by id descending, no `sent` last."""
    chosen = [b for b in bodies if kind is None or b["category"][0]["coding"][0]["code"] == kind]
    dated = sorted((b for b in chosen if "sent" in b), key=lambda b: (b["sent"], b["id"]), reverse=True)
    undated = sorted((b["id"] for b in chosen if "sent" not in b), reverse=True)
    return [b["id"] for b in dated] + undated


async def _walk(client: httpx.AsyncClient, params: dict) -> tuple[list[str], int]:
    """Every match id, following `next`; and how many pages that took."""
    seen: list[str] = []
    pages = 0
    response = await client.get("/fhir/Communication", params=params)
    while True:
        assert response.status_code == 200, response.text
        pages += 1
        bundle = response.json()
        seen += [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
        following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not following:
            return seen, pages
        response = await client.get(following[0])


async def _first_page(client: httpx.AsyncClient, params: dict) -> list[str]:
    response = await client.get("/fhir/Communication", params=params)
    assert response.status_code == 200, response.text
    return [e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"]


async def test_pages_read_through_windows_are_the_exact_pages(client: httpx.AsyncClient, app) -> None:
    windows = app.state.engine.searcher.windows
    dense = await _notebook(client, "dense", 150)
    expected = _newest_first(dense)
    params = {"subject": "Patient/dense", "_sort": "-sent", "_count": "10"}
    for _ in range(MIN_OBSERVATIONS):  # pages served the usual way teach the estimates
        assert await _first_page(client, params) == expected[:10]
    assert windows.served == 0

    assert await _first_page(client, params) == expected[:10]
    assert windows.served == 1 and windows.missed == 0
    walked, pages = await _walk(client, params)  # next pages teach the estimates of pages below a cursor
    assert walked == expected
    served = windows.served
    walked, pages = await _walk(client, params)  # then read windows below the cursor
    assert walked == expected
    # all but the pages that reach the entries with no `sent` (no window holds those) and the last
    assert windows.served - served >= pages - 3, (windows.served - served, windows.missed, pages)

    await client.delete(f"/fhir/Communication/{expected[0]}")  # deleted entries leave windows
    newer = entry("dense-new", "dense", "alert", _instant(NOW + timedelta(days=30)), "nouvelle", "Practitioner/nurse")
    await put(client, newer)
    served = windows.served
    assert await _first_page(client, params) == ["dense-new", *expected[1:10]]
    assert windows.served == served + 1


async def test_a_window_holding_too_few_rows_gives_way_to_the_whole_search(client: httpx.AsyncClient, app) -> None:
    windows = app.state.engine.searcher.windows
    dense = await _notebook(client, "dense", 120)
    sparse = await _entries(client, "sparse", [NOW - timedelta(days=400 + n) for n in range(25)])
    params = {"_sort": "-sent", "_count": "10"}
    for _ in range(MIN_OBSERVATIONS):
        await _first_page(client, {**params, "subject": "Patient/dense"})
    # a patient whose entries are all older than the window: the window is empty, the page is not
    assert await _first_page(client, {**params, "subject": "Patient/sparse"}) == _newest_first(sparse)[:10]
    assert windows.missed == 1 and windows.served == 0
    assert await _first_page(client, {**params, "subject": "Patient/dense"}) == _newest_first(dense)[:10]
    assert windows.served == 1


async def test_a_second_window_twice_as_wide_is_read_below_the_first(client: httpx.AsyncClient, app) -> None:
    windows = app.state.engine.searcher.windows
    dense = await _notebook(client, "dense", 60)  # the ten newest reach 15 hours back
    lagging = await _entries(client, "lagging", [NOW - timedelta(hours=20 + n) for n in range(30)])
    params = {"_sort": "-sent", "_count": "10"}
    for _ in range(MIN_OBSERVATIONS):
        assert await _first_page(client, {**params, "subject": "Patient/dense"}) == _newest_first(dense)[:10]
    # the first window (the last ~21.4 hours: 8 rows below now over 15 hours, spaced for 11) holds
    # two of these, too few; the next one (~21.4 to ~64.3 hours) the rest
    assert await _first_page(client, {**params, "subject": "Patient/lagging"}) == _newest_first(lagging)[:10]
    assert (windows.served, windows.widened, windows.missed) == (1, 1, 0)


async def test_windows_apply_the_other_criteria_and_includes(client: httpx.AsyncClient, app) -> None:
    windows = app.state.engine.searcher.windows
    await put(client, {"resourceType": "Practitioner", "id": "nurse", "name": [{"family": "Dubois"}]})
    dense = await _notebook(client, "dense", 150)
    params = {"subject": "dense", "category": "alert", "_sort": "-sent", "_count": "5", "_include": "Communication:sender"}
    expected = _newest_first(dense, "alert")
    for _ in range(MIN_OBSERVATIONS + 2):
        response = await client.get("/fhir/Communication", params=params)
        entries = response.json()["entry"]
        assert [e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"] == expected[:5]
        assert [e["resource"]["id"] for e in entries if e["search"]["mode"] == "include"] == ["nurse"]
    assert windows.served == 2  # `subject=dense` names two targets (Group, Patient): one range each
    walked, _ = await _walk(client, {k: v for k, v in params.items() if k != "_include"})
    assert walked == expected


@pytest.mark.parametrize("params", [
    {"subject": "Patient/dense", "_sort": "sent"},  # oldest first: missing values come first
    {"subject": "Patient/dense", "_sort": "-sent", "_total": "accurate"},
    {"subject": "Patient/dense", "_sort": "-_lastUpdated"},
    {"sender": "Practitioner/nurse", "_sort": "-sent", "_summary": "count"},
])
async def test_searches_no_window_can_serve_never_try_one(client: httpx.AsyncClient, app, params: dict) -> None:
    windows = app.state.engine.searcher.windows
    await _notebook(client, "dense", 40)
    for _ in range(MIN_OBSERVATIONS + 2):
        assert (await client.get("/fhir/Communication", params={**params, "_count": "5"})).status_code == 200
    assert windows.served == windows.missed == 0


def test_estimates_need_enough_full_pages() -> None:
    estimates = WindowEstimates()
    for _ in range(MIN_OBSERVATIONS - 1):
        estimates.learn(SHAPE, ANCHOR, [ANCHOR - timedelta(hours=h) for h in range(1, 11)], full=True)
    assert estimates.window(SHAPE, ANCHOR, 11, after_anchor=False) is None  # too few pages seen
    estimates.learn(SHAPE, ANCHOR, [ANCHOR - timedelta(hours=h) for h in range(1, 11)], full=True)
    window = estimates.window(SHAPE, ANCHOR, 11, after_anchor=False)
    assert window is not None and window.upper is None and window.lower == ANCHOR - timedelta(hours=11)
    below = estimates.window(SHAPE, ANCHOR, 11, after_anchor=True)
    assert below is not None and below.condition() == {"$gt": ANCHOR - timedelta(hours=11), "$lt": ANCHOR + timedelta(milliseconds=1)}
    assert below.below().condition() == {"$gt": ANCHOR - timedelta(hours=33), "$lt": ANCHOR - timedelta(hours=11) + timedelta(milliseconds=1)}
    for _ in range(MIN_OBSERVATIONS + 1):  # most pages now hold less than a page's worth: no windows
        estimates.learn(SHAPE, ANCHOR, [ANCHOR], full=False)
    assert estimates.window(SHAPE, ANCHOR, 11, after_anchor=False) is None


def test_a_window_reaches_a_page_below_the_newest_row_not_the_gap_times_the_rows() -> None:
    estimates = WindowEstimates()
    month_old = [ANCHOR - timedelta(days=30, hours=h) for h in range(10)]  # newest 30 days back, then hourly
    for _ in range(MIN_OBSERVATIONS):
        estimates.learn(SHAPE, ANCHOR, month_old, full=True)
    window = estimates.window(SHAPE, ANCHOR, 11, after_anchor=False)
    assert window is not None and window.lower == ANCHOR - timedelta(days=30, hours=10)


def test_rows_dated_after_the_anchor_stretch_no_window() -> None:
    estimates = WindowEstimates()
    future = [ANCHOR + timedelta(days=4), ANCHOR + timedelta(days=3)]
    for _ in range(MIN_OBSERVATIONS):
        estimates.learn(SHAPE, ANCHOR, [*future, *(ANCHOR - timedelta(hours=h) for h in range(2, 10))], full=True)
    window = estimates.window(SHAPE, ANCHOR, 11, after_anchor=False)
    assert window is not None and window.lower == ANCHOR - timedelta(hours=12)


def test_the_sort_index_is_found_in_the_index_declarations() -> None:
    assert sort_indexes(INDEXES[RESOURCES]) == {"ix.rf": "so.sent"}
