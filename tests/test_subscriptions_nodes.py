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


def wait_for(check: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def arrival_order(receiver: Receiver) -> list[int]:
    return [n for item in list(receiver.received) if item.body for n in numbers(item.json())]


def lease_holder(database_uri: str, database: str) -> int | None:
    with MongoClient(database_uri) as client:
        lease = client[database]["leases"].find_one({"_id": "subscription-dispatcher"})
    return int(lease["owner"].split(":")[1]) if lease else None


def test_two_nodes_and_a_kill_9_lose_nothing_and_keep_order(database_uri: str, receiver: Receiver, tmp_path: Path) -> None:
    database = f"test_{uuid.uuid4().hex[:16]}"
    env = {"CALIPSO_MONGODB_URI": database_uri, "CALIPSO_DATABASE": database, "CALIPSO_SUBSCRIPTION_ENDPOINTS": receiver.url,
           "CALIPSO_SUBSCRIPTION_LEASE_SECONDS": "2", "CALIPSO_AUDIT": "off"}
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

        receiver.stall = 1.0  # notifications now hang in flight
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

        wait_for(lambda: set(arrival_order(receiver)) >= set(range(1, 10)), timeout=60)
        order = arrival_order(receiver)
        first_seen = list(dict.fromkeys(order))
        assert first_seen == list(range(1, 10)), order
        assert receiver.refused_signatures == 0
    finally:
        for node in nodes:
            if node.process.poll() is None:
                node.stop()
