"""Subscriptions across real `calipso serve` processes sharing one database: two API nodes, one
of them killed with SIGKILL while its notifications are in flight. Every event arrives, in
order; a duplicate is only ever an event-number already seen (the IG allows it)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from pymongo import MongoClient

from conformance.server import Served
from fhir_server.subscriptions.receiver import Receiver, numbers
from tests.conftest import notebook_entry
from tests.test_subscriptions import SECRET, topic_subscription


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver(SECRET).start()
    yield endpoint
    endpoint.stop()


def wait_for(check: Any, timeout: float = 30, state: Any = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out {state()}")


def arrival_order(receiver: Receiver) -> list[int]:
    return [n for item in list(receiver.received) if item.body for n in numbers(item.json())]


def lease_holder(database_uri: str, database: str) -> int | None:
    with MongoClient(database_uri) as client:
        lease = client[database]["leases"].find_one({"_id": "subscription-dispatcher"})
    return int(lease["owner"].split(":")[1]) if lease else None


def test_two_nodes_and_a_kill_9_lose_nothing_and_keep_order(database_uri: str, receiver: Receiver, tmp_path: Path) -> None:
    database = f"test_{uuid.uuid4().hex[:16]}"
    env = {"CALIPSO_MONGODB_URI": database_uri, "CALIPSO_DATABASE": database, "CALIPSO_SUBSCRIPTION_ENDPOINTS": receiver.url,
           "CALIPSO_SUBSCRIPTION_LEASE_SECONDS": "4", "CALIPSO_AUDIT": "off",
           "CALIPSO_SUBSCRIPTION_RETRY_CAP_SECONDS": "2"}  # a send slowed by a loaded machine is retried soon (back-off: test_subscriptions.py)
    nodes = [Served(tmp_path / name, env=env) for name in ("a", "b")]
    try:
        for node in nodes:
            node.wait_ready()
        wait_for(lambda: lease_holder(database_uri, database) is not None)
        idle = next(node for node in nodes if node.process.pid != lease_holder(database_uri, database))
        # written on the node that does not dispatch: the other one must learn of it
        created = httpx.post(f"{idle.base}/Subscription", json=topic_subscription(receiver.url))
        assert created.status_code == 201, created.text
        wait_for(lambda: len(receiver.received) == 1)  # the handshake

        receiver.stall = 1.0  # notifications now hang in flight (within the 2 s send timeout a 4 s lease gives)
        for n in range(6):
            answer = httpx.post(f"{nodes[n % 2].base}/Communication", json=notebook_entry("p1", f"Passage {n}"))
            assert answer.status_code == 201
        wait_for(lambda: receiver.arriving >= 2)  # a notification is being sent
        holder = lease_holder(database_uri, database)
        victim = next(node for node in nodes if node.process.pid == holder)
        survivor = next(node for node in nodes if node is not victim)
        os.kill(victim.process.pid, signal.SIGKILL)
        victim.process.wait(10)
        receiver.stall = 0.0
        for n in range(6, 9):
            assert httpx.post(f"{survivor.base}/Communication", json=notebook_entry("p1", f"Passage {n}")).status_code == 201

        # a node killed inside a database transaction (numbering events) holds its locks until the
        # database drops the transaction: 60 s (MongoDB's transactionLifetimeLimitSeconds); the
        # survivor's numbering waits for it, then every event arrives
        wait_for(lambda: set(arrival_order(receiver)) >= set(range(1, 10)), timeout=120,
                 state=lambda: (arrival_order(receiver), receiver.arriving, [n.process.poll() for n in nodes]))
        order = arrival_order(receiver)
        first_seen = list(dict.fromkeys(order))
        assert first_seen == list(range(1, 10)), order
        assert receiver.refused_signatures == 0
    finally:
        for node in nodes:
            if node.process.poll() is None:
                node.stop()


def websocket_subscription(patient: str) -> dict[str, Any]:
    body = topic_subscription("", patient=patient, content="full-resource")
    body["channel"] = {key: value for key, value in body["channel"].items() if key not in ("endpoint", "extension", "header")}
    body["channel"]["type"] = "websocket"
    return body


async def test_a_websocket_binds_with_a_token_and_replays_what_it_missed(database_uri: str, tmp_path: Path) -> None:
    import asyncio

    import orjson
    import websockets

    from fhir_server.subscriptions.receiver import status_of

    env = {"CALIPSO_MONGODB_URI": database_uri, "CALIPSO_DATABASE": f"test_{uuid.uuid4().hex[:16]}", "CALIPSO_AUDIT": "off"}
    node = Served(tmp_path / "ws", env=env)
    try:
        await asyncio.to_thread(node.wait_ready)
        async with httpx.AsyncClient(base_url=node.base) as client:
            created = await client.post("/Subscription", json=websocket_subscription("p1"))
            assert created.status_code == 201, created.text
            subscription = created.json()["id"]
            for _ in range(100):
                if (await client.get(f"/Subscription/{subscription}")).json()["status"] == "active":
                    break
                await asyncio.sleep(0.05)

            async def bind(since: str | None = None) -> Any:
                params = {"eventsSinceNumber": since} if since else {}
                answer = (await client.get(f"/Subscription/{subscription}/$get-ws-binding-token", params=params)).json()
                given = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in answer["parameter"]}
                socket = await websockets.connect(given["websocket-url"])
                await socket.send(f"bind-with-token {given['token']}")
                handshake = orjson.loads(await asyncio.wait_for(socket.recv(), 10))
                assert status_of(handshake)["type"] == "handshake"
                return socket, given["token"]

            async def received(socket: Any, count: int) -> list[dict[str, Any]]:
                found: list[dict[str, Any]] = []
                while sum(len(status_of(b)["notification-event"]) for b in found) < count:
                    found.append(orjson.loads(await asyncio.wait_for(socket.recv(), 10)))
                return found

            socket, token = await bind()
            for n in range(2):
                assert (await client.post("/Communication", json=notebook_entry("p1", f"Passage {n}"))).status_code == 201
            await client.post("/Communication", json=notebook_entry("p2", "autre patient"))
            bundles = await received(socket, 2)
            assert [n for b in bundles for n in numbers(b)] == [1, 2]
            assert [e["resource"]["payload"][0]["contentString"] for b in bundles for e in b["entry"][1:]] == ["Passage 0", "Passage 1"]
            await socket.close()

            assert (await client.post("/Communication", json=notebook_entry("p1", "Pendant la coupure"))).status_code == 201
            socket, _ = await bind(since="2")
            replayed = await received(socket, 2)
            assert [n for b in replayed for n in numbers(b)] == [2, 3], "what the socket missed comes again"
            await socket.close()

            reused = await websockets.connect(f"{node.base.replace('http://', 'ws://')}/$subscription-websocket")
            await reused.send(f"bind-with-token {token}")
            assert (await asyncio.wait_for(reused.recv(), 10)).startswith("error"), "a binding token serves once"
            await reused.close()
    finally:
        await asyncio.to_thread(node.stop)


async def test_an_r4_websocket_binds_with_the_bearer_token_and_gets_pings(database_uri: str, tmp_path: Path) -> None:
    import asyncio

    import websockets

    env = {"CALIPSO_MONGODB_URI": database_uri, "CALIPSO_DATABASE": f"test_{uuid.uuid4().hex[:16]}", "CALIPSO_AUDIT": "off"}
    node = Served(tmp_path / "r4ws", auth=True, env=env)
    try:
        await asyncio.to_thread(node.wait_ready)
        system = {"Authorization": f"Bearer {await asyncio.to_thread(node.token, '--sub', 'ehr', '--scope', 'system/*.cruds')}"}
        other = {"Authorization": "Bearer " + await asyncio.to_thread(node.token, "--sub", "x", "--scope", "user/*.cruds",
                                                                      "--fhir-user", "Practitioner/other")}
        classic = {"resourceType": "Subscription", "status": "requested", "reason": "pings", "criteria": "Communication?patient=Patient/p1",
                   "channel": {"type": "websocket"}}
        async with httpx.AsyncClient(base_url=node.base, headers=system) as client:
            subscription = (await client.post("/Subscription", json=classic)).json()["id"]
            for _ in range(100):
                if (await client.get(f"/Subscription/{subscription}")).json()["status"] == "active":
                    break
                await asyncio.sleep(0.05)
            url = f"{node.base.replace('http://', 'ws://')}/$subscription-websocket"
            for headers in ({}, other):  # no token; a token that does not reach the subscription
                refused = await websockets.connect(url, additional_headers=headers)
                await refused.send(f"bind {subscription}")
                assert (await asyncio.wait_for(refused.recv(), 10)).startswith("error")
                await refused.close()
            socket = await websockets.connect(url, additional_headers=system)
            await socket.send(f"bind {subscription}")
            assert await asyncio.wait_for(socket.recv(), 10) == f"bound {subscription}"
            await client.post("/Communication", json=notebook_entry("p2", "autre patient"))
            assert (await client.post("/Communication", json=notebook_entry("p1", "Passage"))).status_code == 201
            assert await asyncio.wait_for(socket.recv(), 10) == f"ping {subscription}"
            await socket.close()
    finally:
        await asyncio.to_thread(node.stop)
