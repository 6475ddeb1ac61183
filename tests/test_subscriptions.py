"""Subscriptions end to end: a real HTTP receiver (tests/receiver.py), the dispatcher driven
turn by turn under an injected clock, the API through the app. What is checked: handshake,
signed notifications in event-number order, retries through an outage, `error` after the
last attempt with the events kept for `$events`, the subscriber's access decided again at
each send, bad subscriptions refused, two dispatchers sharing a database."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import httpx
import orjson
import pytest
from fastapi import FastAPI

from fhir_server.app import create_app
from fhir_server.settings import Settings
from fhir_server.storage.notifications import NotificationStore
from fhir_server.subscriptions.dispatcher import DispatchSettings, Dispatcher
from fhir_server.subscriptions.endpoints import EndpointPolicy
from fhir_server.subscriptions.profiles import notification_issues, status_issues
from tests.conftest import fhir_client, notebook_entry, running
from tests.fhir_schema import assert_conforms
from fhir_server.subscriptions.receiver import Receiver, numbers, status_of

SECRET = "a-long-enough-shared-secret"
TOPIC = "https://fhir.hopitauxchampagnesud.fr/calipso/SubscriptionTopic/notebook-entry"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
SECRET_URL = "https://fhir.hopitauxchampagnesud.fr/calipso/StructureDefinition/subscription-signing-secret"


def assert_notification(bundle: dict[str, Any]) -> None:
    """A notification conforms to the R4 JSON Schema and to the Backport IG's R4 profiles."""
    assert_conforms(bundle)
    assert notification_issues(bundle) == [], [i.diagnostics for i in notification_issues(bundle)]


def test_the_notification_profiles_catch_what_is_wrong() -> None:
    """The transcribed Backport IG profiles (fhir_server/subscriptions/backport) can fail."""
    wrong_type = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    assert {i.expression for i in notification_issues(wrong_type)} >= {"Bundle.type"}
    no_status = {"resourceType": "Bundle", "type": "history", "entry": [{"resource": {"resourceType": "Patient"}}]}
    assert any("subscriptionStatus" in i.diagnostics for i in notification_issues(no_status))
    bad_kind = {"resourceType": "Parameters", "parameter": [
        {"name": "subscription", "valueReference": {"reference": "Subscription/x"}},
        {"name": "status", "valueCode": "active"}, {"name": "type", "valueCode": "ping"}]}
    assert any("ping" in i.diagnostics for i in status_issues(bad_kind))
    integer_number = {"resourceType": "Parameters", "parameter": [
        {"name": "subscription", "valueReference": {"reference": "Subscription/x"}}, {"name": "status", "valueCode": "active"},
        {"name": "type", "valueCode": "event-notification"},
        {"name": "notification-event", "part": [{"name": "event-number", "valueInteger": 1}]}]}
    assert any("valueInteger is not allowed" in i.diagnostics for i in status_issues(integer_number)), "a choice narrowed to string"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver(SECRET).start()
    yield endpoint
    endpoint.stop()


@pytest.fixture
async def api(settings: Settings, receiver: Receiver) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = replace(settings, subscriptions=False, subscription_endpoints=(receiver.url,))
    async with running(create_app(settings)) as app, fhir_client(app) as client:
        yield app, client


def dispatcher(app: FastAPI, receiver: Receiver, clock: Clock, **overrides: Any) -> Dispatcher:
    engine = app.state.engine
    return Dispatcher(engine, NotificationStore(engine.store), app.state.gate.access_of, EndpointPolicy((receiver.url,)),
                      DispatchSettings(base_url="http://calipso.test/fhir", **overrides), clock=clock)


def topic_subscription(endpoint: str, patient: str = "p1", content: str = "id-only", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "meta": {"profile": [BACKPORT + "backport-subscription"]},
        "status": "requested",
        "reason": "Carnet de liaison de la patiente",
        "criteria": TOPIC,
        "_criteria": {"extension": [{"url": BACKPORT + "backport-filter-criteria", "valueString": f"Communication?patient=Patient/{patient}"}]},
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": content}]},
            "header": ["X-Receiver: notebook"],
            "extension": [{"url": SECRET_URL, "valueString": SECRET}],
        },
        **extra,
    }


async def turn(dispatch: Dispatcher) -> None:
    assert await dispatch.turn()
    await dispatch.idle()


async def subscribe(client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    response = await client.post("/fhir/Subscription", json=body, headers=headers or {})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def write_entries(client: httpx.AsyncClient, patient: str, count: int, headers: dict[str, str] | None = None) -> list[str]:
    ids = []
    for n in range(count):
        response = await client.post("/fhir/Communication", json=notebook_entry(patient, f"Passage {n}"), headers=headers or {})
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


async def test_handshake_then_signed_notifications_in_event_order(api: tuple[FastAPI, httpx.AsyncClient], receiver: Receiver) -> None:
    app, client = api
    clock = Clock()
    dispatch = dispatcher(app, receiver, clock)
    subscription = await subscribe(client, topic_subscription(receiver.url))
    stored = (await client.get(f"/fhir/Subscription/{subscription}")).json()
    assert "extension" not in stored["channel"], "the signing secret is never served back"
    assert SECRET not in str(stored)

    await turn(dispatch)
    [handshake] = receiver.bundles("handshake")
    assert status_of(handshake)["events-since-subscription-start"] == "0"
    assert (await client.get(f"/fhir/Subscription/{subscription}")).json()["status"] == "active"

    mine = await write_entries(client, "p1", 3)
    await write_entries(client, "p2", 2)  # another patient's notebook: not for this subscription
    await turn(dispatch)
    bundles = receiver.bundles()
    assert [n for b in bundles for n in numbers(b)] == [1, 2, 3]
    for bundle in [*receiver.bundles("handshake"), *bundles]:
        assert_notification(bundle)
        assert bundle["type"] == "history"
        assert bundle["entry"][0]["resource"]["resourceType"] == "Parameters"
    focus = [e["focus"]["reference"] for b in bundles for e in status_of(b)["notification-event"]]
    assert focus == [f"http://calipso.test/fhir/Communication/{i}" for i in mine]
    assert all("resource" not in e for b in bundles for e in b["entry"][1:]), "id-only carries no resources"
    assert receiver.refused_signatures == 0
    assert all(r.headers.get("X-Receiver") == "notebook" for r in receiver.received)

    status = (await client.get(f"/fhir/Subscription/{subscription}/$status")).json()
    assert status_issues(status["entry"][0]["resource"]) == []
    parameters = status_of({"entry": [{"resource": status["entry"][0]["resource"]}]})
    assert parameters["events-since-subscription-start"] == "3" and parameters["status"] == "active"


async def test_full_resource_payload_carries_the_version_that_triggered(api: tuple[FastAPI, httpx.AsyncClient], receiver: Receiver) -> None:
    app, client = api
    clock = Clock()
    dispatch = dispatcher(app, receiver, clock)
    await subscribe(client, topic_subscription(receiver.url, content="full-resource"))
    await turn(dispatch)
    [entry_id] = await write_entries(client, "p1", 1)
    corrected = {**notebook_entry("p1", "Correction"), "id": entry_id}
    assert (await client.put(f"/fhir/Communication/{entry_id}", json=corrected)).status_code == 200
    await turn(dispatch)
    resources = [e["resource"] for b in receiver.bundles() for e in b["entry"][1:]]
    assert [(r["id"], r["meta"]["versionId"], r["payload"][0]["contentString"]) for r in resources] == [
        (entry_id, "1", "Passage 0"), (entry_id, "2", "Correction")]


async def failing(api: tuple[FastAPI, httpx.AsyncClient], receiver: Receiver, clock: Clock, answer: int, entries: int,
                  **overrides: Any) -> tuple[Dispatcher, str]:
    """A subscription handshaken, then an endpoint that answers `answer` while `entries` are written."""
    app, client = api
    dispatch = dispatcher(app, receiver, clock, **overrides)
    subscription = await subscribe(client, topic_subscription(receiver.url))
    await turn(dispatch)
    receiver.answer = answer
    await write_entries(client, "p1", entries)
    return dispatch, subscription


async def test_an_outage_is_ridden_out_in_order_with_nothing_lost(api: tuple[FastAPI, httpx.AsyncClient], receiver: Receiver) -> None:
    """Fifteen minutes of 503s (the clock compressed): retries back off, then every event
    arrives once the endpoint is back, in order."""
    app, client = api
    clock = Clock()
    dispatch, subscription = await failing(api, receiver, clock, 503, 4, max_retry_seconds=120)
    attempts_seen = []
    outage_end = clock.now + timedelta(minutes=15)
    while clock.now < outage_end:
        await turn(dispatch)
        state = await NotificationStore(app.state.engine.store).state(f"Subscription/{subscription}")
        attempts_seen.append(state.attempts)
        clock.advance(30)
        await write_entries(client, "p1", 1) if len(attempts_seen) % 10 == 0 else None
    assert max(attempts_seen) >= 5, attempts_seen
    assert receiver.event_numbers() == []
    assert (await client.get(f"/fhir/Subscription/{subscription}")).json()["status"] == "active"
    receiver.answer = 200
    clock.advance(300)
    await turn(dispatch)
    written = 4 + len(attempts_seen) // 10
    assert receiver.event_numbers() == list(range(1, written + 1))


async def test_after_the_last_attempt_the_subscription_errs_and_keeps_its_events(
        api: tuple[FastAPI, httpx.AsyncClient], receiver: Receiver) -> None:
    _, client = api
    clock = Clock()
    dispatch, subscription = await failing(api, receiver, clock, 500, 2, max_attempts=3)
    for _ in range(4):
        await turn(dispatch)
        clock.advance(3600)
    stored = (await client.get(f"/fhir/Subscription/{subscription}")).json()
    assert stored["status"] == "error" and "HTTP 500" in stored["error"]
    events = (await client.get(f"/fhir/Subscription/{subscription}/$events", params={"eventsSinceNumber": "1"})).json()
    assert_notification(events)
    assert list(numbers(events)) == [1, 2]
    assert status_of(events)["type"] == "query-event"

    receiver.answer = 200  # the subscriber fixed its endpoint and asks again
    again = topic_subscription(receiver.url, id=subscription)
    assert (await client.put(f"/fhir/Subscription/{subscription}", json=again)).status_code == 200
    await turn(dispatch)
    await turn(dispatch)
    assert receiver.event_numbers() == [1, 2]
    assert (await client.get(f"/fhir/Subscription/{subscription}")).json()["status"] == "active"


@pytest.mark.parametrize("change, expression", [
    ({"status": "active"}, "Subscription.status"),
    ({"criteria": "https://example.org/SubscriptionTopic/unknown"}, "Subscription.criteria"),
    ({"criteria": "not a search"}, "Subscription.criteria"),
    ({"_criteria": {"extension": [{"url": BACKPORT + "backport-filter-criteria", "valueString": "Communication?sender=Practitioner/x"}]}},
     "Subscription.criteria.extension"),
])
async def test_subscriptions_calipso_cannot_serve_are_refused(api: tuple[FastAPI, httpx.AsyncClient], receiver: Receiver,
                                                             change: dict[str, Any], expression: str) -> None:
    _, client = api
    response = await client.post("/fhir/Subscription", json={**topic_subscription(receiver.url), **change})
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["expression"] == [expression]
    assert (await client.get("/fhir/Subscription")).json().get("total", 0) == 0


@pytest.mark.parametrize("channel, expression", [
    ({"endpoint": "http://10.0.0.5/notify"}, "Subscription.channel.endpoint"),
    ({"endpoint": "https://127.0.0.1:9/notify"}, "Subscription.channel.endpoint"),
    ({"endpoint": "https://169.254.169.254/latest/meta-data"}, "Subscription.channel.endpoint"),
    ({"extension": []}, "Subscription.channel.extension"),
    ({"extension": [{"url": SECRET_URL, "valueString": "short"}]}, "Subscription.channel.extension"),
    ({"header": ["X-Injected: a\r\nHost: evil"]}, "Subscription.channel.header[0]"),
    ({"type": "email"}, "Subscription.channel.type"),
])
async def test_channels_that_could_be_abused_are_refused(api: tuple[FastAPI, httpx.AsyncClient], receiver: Receiver,
                                                         channel: dict[str, Any], expression: str) -> None:
    _, client = api
    body = topic_subscription(receiver.url)
    body["channel"] = {**body["channel"], **channel}
    response = await client.post("/fhir/Subscription", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["expression"] == [expression]


async def test_two_dispatchers_on_one_database_send_each_event_once(api: tuple[FastAPI, httpx.AsyncClient], receiver: Receiver) -> None:
    app, client = api
    clock = Clock()
    first, second = dispatcher(app, receiver, clock), dispatcher(app, receiver, clock)
    await subscribe(client, topic_subscription(receiver.url))
    assert await first.turn()
    assert not await second.turn(), "the lease is held: the second node waits"
    await first.idle()
    await write_entries(client, "p1", 3)
    await turn(first)
    await first.stop()  # the first node goes away (its lease released)
    await write_entries(client, "p1", 2)
    await turn(second)
    assert receiver.event_numbers() == [1, 2, 3, 4, 5]


# -- the subscriber's access, decided again at each send -----------------------------------------


@pytest.fixture
async def secured_api(settings: Settings, receiver: Receiver, tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = replace(settings, subscriptions=False, subscription_endpoints=(receiver.url,), auth=True, dev_issuer=True, data_dir=tmp_path)
    async with running(create_app(settings)) as app, fhir_client(app) as client:
        yield app, client


def bearer(app: FastAPI, scope: str, fhir_user: str | None = None) -> dict[str, str]:
    token = app.state.dev_issuer.token("tester", scope, "calipso", fhir_user=fhir_user)
    return {"Authorization": f"Bearer {token}"}


async def test_a_member_who_left_the_circle_hears_nothing_more(secured_api: tuple[FastAPI, httpx.AsyncClient], receiver: Receiver) -> None:
    app, client = secured_api
    system = bearer(app, "system/*.cruds")
    gp = bearer(app, "user/*.cruds", "Practitioner/gp")
    team = {"resourceType": "CareTeam", "id": "team-p1", "status": "active", "subject": {"reference": "Patient/p1"},
            "participant": [{"member": {"reference": "Practitioner/gp"}}]}
    for resource in ({"resourceType": "Patient", "id": "p1"}, {"resourceType": "Practitioner", "id": "gp"}, team):
        assert (await client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource, headers=system)).status_code == 201
    clock = Clock()
    dispatch = dispatcher(app, receiver, clock)
    await subscribe(client, topic_subscription(receiver.url), gp)
    await turn(dispatch)
    await write_entries(client, "p1", 2, system)
    await turn(dispatch)
    assert receiver.event_numbers() == [1, 2]

    left = {**team, "participant": [{"member": {"reference": "Practitioner/gp"}, "period": {"start": "2026-01-01", "end": "2026-02-01"}}]}
    assert (await client.put("/fhir/CareTeam/team-p1", json=left, headers=system)).status_code == 200
    await write_entries(client, "p1", 2, system)
    await turn(dispatch)
    assert receiver.event_numbers() == [1, 2], "the GP left the care team: nothing more about this patient"


async def test_a_token_subscribes_only_to_what_its_scopes_read(secured_api: tuple[FastAPI, httpx.AsyncClient], receiver: Receiver) -> None:
    app, client = secured_api
    plans_only = bearer(app, "user/CarePlan.rs user/Subscription.cruds", "Practitioner/gp")
    response = await client.post("/fhir/Subscription", json=topic_subscription(receiver.url), headers=plans_only)
    assert response.status_code == 403, response.text


# -- the HL7 feed to the receiver, with the app's own dispatcher --------------------------------


async def test_a_discharge_over_mllp_reaches_the_subscribed_receiver(settings: Settings, receiver: Receiver) -> None:
    import asyncio
    import time

    from hl7v2_bridge.client import MllpClient, ack_code
    from tests.bridge_fixtures import sample

    settings = replace(settings, mllp_port=0, subscription_endpoints=(receiver.url,))
    async with running(create_app(settings)) as app, fhir_client(app) as client:
        entries = topic_subscription(receiver.url)
        del entries["_criteria"]  # every notebook entry (the token is unrestricted: auth is off here)
        discharges = {**topic_subscription(receiver.url), "criteria": TOPIC.replace("notebook-entry", "patient-discharged")}
        del discharges["_criteria"]
        await subscribe(client, entries)
        await subscribe(client, discharges)
        deadline = time.monotonic() + 10
        while len(receiver.bundles("handshake")) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        async with MllpClient("127.0.0.1", app.state.mllp_port) as mllp:
            assert ack_code(await mllp.send(sample("A03-discharge-home.hl7"))) == "AA"
        while len(receiver.bundles()) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        focus = sorted(e["focus"]["reference"].split("/fhir/")[1].split("/")[0] for b in receiver.bundles() for e in status_of(b)["notification-event"])
        assert focus == ["Communication", "Encounter"]


async def test_a_subscription_is_its_owners_alone(secured_api: tuple[FastAPI, httpx.AsyncClient], receiver: Receiver) -> None:
    """It names a patient and an endpoint: another user neither sees nor changes it."""
    app, client = secured_api
    gp = bearer(app, "user/*.cruds", "Practitioner/gp")
    other = bearer(app, "user/*.cruds", "Practitioner/other-gp")
    system = bearer(app, "system/*.cruds")
    subscription = await subscribe(client, topic_subscription(receiver.url), gp)
    mine = (await client.get(f"/fhir/Subscription/{subscription}", headers=gp)).json()
    assert {"system": "https://fhir.hopitauxchampagnesud.fr/calipso/CodeSystem/resource-owner", "code": "Practitioner/gp"} in mine["meta"]["tag"]
    assert (await client.get(f"/fhir/Subscription/{subscription}", headers=other)).status_code == 404
    assert (await client.get("/fhir/Subscription", headers=other)).json().get("total", 0) == 0
    assert (await client.get(f"/fhir/Subscription/{subscription}/$status", headers=other)).status_code == 404
    hijack = topic_subscription("https://attacker.example.org/hook", id=subscription)
    assert (await client.put(f"/fhir/Subscription/{subscription}", json=hijack, headers=other)).status_code == 404
    assert (await client.delete(f"/fhir/Subscription/{subscription}", headers=other)).status_code == 404
    spoofed = topic_subscription(receiver.url, meta={"tag": [{"system": mine["meta"]["tag"][0]["system"], "code": "Practitioner/gp"}]})
    created = (await client.post("/fhir/Subscription", json=spoofed, headers=other)).json()
    assert [t["code"] for t in created["meta"]["tag"]] == ["Practitioner/other-gp"], "the owner tag is the writer's, whatever it sends"
    assert (await client.get(f"/fhir/Subscription/{subscription}", headers=system)).status_code == 200
    assert (await client.get(f"/fhir/Subscription/{subscription}", headers=gp)).json()["channel"]["endpoint"] == receiver.url


async def test_an_r4_criteria_subscription_gets_each_matching_resource(api: tuple[FastAPI, httpx.AsyncClient], receiver: Receiver) -> None:
    app, client = api
    clock = Clock()
    dispatch = dispatcher(app, receiver, clock)
    classic = {"resourceType": "Subscription", "status": "requested", "reason": "urgent entries", "criteria": "Communication?priority=urgent",
               "channel": {"type": "rest-hook", "endpoint": receiver.url, "payload": "application/fhir+json",
                           "extension": [{"url": SECRET_URL, "valueString": SECRET}]}}
    subscription = await subscribe(client, classic)
    await turn(dispatch)
    assert receiver.received[0].body == b"", "an R4 subscription's handshake is an empty POST"
    urgent = {**notebook_entry("p1", "Chute ce matin"), "priority": "urgent"}
    created = (await client.post("/fhir/Communication", json=urgent)).json()
    await write_entries(client, "p1", 1)  # routine: not for it
    await turn(dispatch)
    bodies = [r.json() for r in receiver.received[1:]]
    assert [(b["resourceType"], b["id"], b["priority"]) for b in bodies] == [("Communication", created["id"], "urgent")]
    assert (await client.get(f"/fhir/Subscription/{subscription}")).json()["status"] == "active"


async def test_heartbeats_keep_a_quiet_subscription_alive(api: tuple[FastAPI, httpx.AsyncClient], receiver: Receiver) -> None:
    app, client = api
    clock = Clock()
    dispatch = dispatcher(app, receiver, clock)
    body = topic_subscription(receiver.url)
    body["channel"]["extension"].append({"url": BACKPORT + "backport-heartbeat-period", "valueUnsignedInt": 60})
    await subscribe(client, body)
    await turn(dispatch)
    await turn(dispatch)
    assert receiver.bundles("heartbeat") == [], "just handshaken: no heartbeat yet"
    clock.advance(61)
    await turn(dispatch)
    [heartbeat] = receiver.bundles("heartbeat")
    assert_notification(heartbeat)
    clock.advance(30)
    await turn(dispatch)
    assert len(receiver.bundles("heartbeat")) == 1


async def test_the_capability_statement_names_the_topics(api: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = api
    statement = (await client.get("/fhir/metadata")).json()
    [subscription] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription"]
    topics = sorted(e["valueCanonical"] for e in subscription["extension"])
    assert topics == sorted(f"https://fhir.hopitauxchampagnesud.fr/calipso/SubscriptionTopic/{name}"
                            for name in ("notebook-entry", "care-team-changed", "care-plan-changed", "patient-discharged"))
    assert {o["name"] for o in subscription["operation"]} >= {"status", "events"}


async def test_every_send_and_failure_is_audited_without_patient_data(settings: Settings, receiver: Receiver, tmp_path: Path) -> None:
    settings = replace(settings, subscriptions=False, subscription_endpoints=(receiver.url,), audit=True, data_dir=tmp_path)
    async with running(create_app(settings)) as app, fhir_client(app) as client:
        engine = app.state.engine
        dispatch = Dispatcher(engine, NotificationStore(engine.store), app.state.gate.access_of, EndpointPolicy((receiver.url,)),
                              DispatchSettings(base_url="http://calipso.test/fhir"), app.state.audit, clock=Clock())
        subscription = await subscribe(client, topic_subscription(receiver.url))
        await turn(dispatch)  # the handshake: sent
        receiver.answer = 503
        await write_entries(client, "p1", 1)
        await turn(dispatch)  # the notification: failed
        await app.state.audit.flush()
        bundle = (await client.get("/fhir/AuditEvent", params={"entity": f"Subscription/{subscription}", "_count": "50"})).json()
        outcomes = sorted(e["resource"]["outcomeDesc"] for e in bundle.get("entry", []))
        assert outcomes == ["event: HTTP 503", "handshake: HTTP 200"]
        for entry in bundle["entry"]:
            event = entry["resource"]
            assert event["type"]["code"] == "110106" and event["agent"][0]["network"]["address"].startswith("http://127.0.0.1:")
            assert "p1" not in orjson.dumps(event).decode()
