"""Security headers, CORS (off unless configured), per-client rate limit, read time limit."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx

from fhir_server.app import create_app
from fhir_server.rest.hardening import RateLimiter
from fhir_server.settings import Settings
from tests.conftest import fhir_client, notebook_patient, running


async def test_every_answer_carries_the_security_headers(client: httpx.AsyncClient) -> None:
    for response in (await client.get("/fhir/metadata"), await client.get("/fhir/Patient/nobody"),
                     await client.post("/fhir/Patient", json=notebook_patient())):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert "strict-transport-security" not in response.headers  # plain http here


async def test_cors_is_off_unless_origins_are_configured(settings: Settings) -> None:
    preflight = {"Origin": "https://app.calipso.example", "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "Authorization"}
    async with running(create_app(settings)) as app, fhir_client(app) as client:
        response = await client.get("/fhir/metadata", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in response.headers
    configured = replace(settings, cors_origins=("https://app.calipso.example",))
    async with running(create_app(configured)) as app:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://calipso.test") as plain:
            allowed = await plain.options("/fhir/Patient", headers=preflight)
            assert allowed.headers["access-control-allow-origin"] == "https://app.calipso.example"
            other = await plain.get("/fhir/metadata", headers={"Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in other.headers


async def test_a_client_over_its_rate_gets_429_and_others_are_served(settings: Settings) -> None:
    limited = replace(settings, rate_limit_per_second=0.5, rate_limit_burst=3)
    async with running(create_app(limited)) as app, fhir_client(app) as client:
        statuses = [(await client.get("/fhir/Patient")).status_code for _ in range(5)]
        assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
        throttled = await client.get("/fhir/Patient")
        assert throttled.json()["issue"][0]["code"] == "throttled" and int(throttled.headers["retry-after"]) >= 1


def test_the_bucket_refills_and_forgets_old_clients() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=1.0, burst=2, max_clients=2, clock=lambda: now[0])
    limiter.check("a"), limiter.check("a")
    try:
        limiter.check("a")
        raise AssertionError("the third request in the same instant must be refused")
    except Exception as error:  # noqa: BLE001
        assert getattr(error, "status", None) == 429
    now[0] += 1.0
    limiter.check("a")  # one token back after one second
    limiter.check("b"), limiter.check("c")
    assert len(limiter._buckets) == 2  # "a" forgotten: memory stays bounded


async def test_a_read_over_its_time_gets_503(settings: Settings) -> None:
    hurried = replace(settings, request_timeout_seconds=0.000001)
    async with running(create_app(hurried)) as app, fhir_client(app) as client:
        response = await client.get("/fhir/Patient", params={"name": "lef"})
        assert response.status_code == 503 and response.json()["issue"][0]["code"] == "timeout"
        created = await client.post("/fhir/Patient", json=notebook_patient())  # writes are not cut short
        assert created.status_code == 201


async def test_with_one_request_at_work_a_bundle_still_reads_and_others_wait_their_turn(settings) -> None:
    """Admission (CALIPSO_HTTP_CONCURRENCY): a Bundle's GET entries run in their parent's turn
    (else the parent would wait for them forever), and requests beyond the limit wait, then are served."""
    async with running(create_app(replace(settings, http_concurrency=1))) as app, fhir_client(app) as client:
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": {**notebook_patient(), "id": "p1"}, "request": {"method": "PUT", "url": "Patient/p1"}},
            {"request": {"method": "GET", "url": "Patient/p1"}}]}
        answer = await asyncio.wait_for(client.post("/fhir", json=bundle), 30)
        assert [e["response"]["status"][:3] for e in answer.json()["entry"]] == ["201", "200"]
        answers = await asyncio.wait_for(asyncio.gather(*(client.get("/fhir/Patient/p1") for _ in range(12))), 30)
        assert [a.status_code for a in answers] == [200] * 12
