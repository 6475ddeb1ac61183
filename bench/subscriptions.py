"""Subscription latency: HL7 discharges over MLLP to a subscribed receiver (issue 21).

    python bench/subscriptions.py [--messages 150] [--rate 5]

`calipso serve` (embedded database, auth off) with a topic subscription to every notebook entry
(id-only, signed) whose endpoint is a real HTTP receiver in this process. A03 messages for
distinct patients are sent over one MLLP connection at `rate` per second; each ACK time is
taken, and each notification's arrival. A discharge writes one notebook entry, numbered in
commit order: the k-th ACK pairs with event k. Latency = arrival - ACK.
Target: p99 < 1 s at 5 msg/s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.harness import ServerProcess, free_port, python  # noqa: E402
from bench.mllp_ingest import discharge  # noqa: E402
from fhir_server.storage.embedded import EmbeddedDatabase  # noqa: E402
from fhir_server.subscriptions.receiver import Receiver  # noqa: E402
from hl7v2_bridge.client import MllpClient, ack_code  # noqa: E402

SECRET = "bench-subscription-secret"
TOPIC = "https://fhir.hopitauxchampagnesud.fr/calipso/SubscriptionTopic/notebook-entry"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
SECRET_URL = "https://fhir.hopitauxchampagnesud.fr/calipso/StructureDefinition/subscription-signing-secret"


def subscription(endpoint: str) -> dict:  # type: ignore[type-arg]
    return {"resourceType": "Subscription", "status": "requested", "reason": "bench", "criteria": TOPIC,
            "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                        "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": "id-only"}]},
                        "extension": [{"url": SECRET_URL, "valueString": SECRET}]}}


def arrivals(receiver: Receiver) -> dict[int, float]:
    """Event number -> when its notification arrived (monotonic)."""
    from fhir_server.subscriptions.receiver import numbers

    found: dict[int, float] = {}
    for item in receiver.received:
        if item.body:
            bundle = item.json()
            for number in numbers(bundle):
                found.setdefault(number, item.at)
    return found


async def run(messages: int, rate: float) -> None:
    receiver = Receiver(SECRET).start()
    work = Path(tempfile.mkdtemp(prefix="calipso-bench-subs-"))
    database = EmbeddedDatabase(work / "data")
    uri = database.start()
    port, mllp_port = free_port(), free_port()
    server = ServerProcess(
        [python(), "-m", "fhir_server.cli", "serve", "--auth", "off", "--port", str(port), "--mllp-port", str(mllp_port),
         "--log-level", "warning"],
        f"http://127.0.0.1:{port}/fhir/metadata",
        env={"CALIPSO_MONGODB_URI": uri, "CALIPSO_DATABASE": "bench_subscriptions", "CALIPSO_SUBSCRIPTION_ENDPOINTS": receiver.url},
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/fhir") as client:
            created = await client.post("/Subscription", json=subscription(receiver.url))
            assert created.status_code == 201, created.text
            deadline = time.monotonic() + 30
            while not receiver.received and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            acks: list[float] = []
            async with MllpClient("127.0.0.1", mllp_port) as mllp:
                start = time.monotonic()
                for n in range(messages):
                    await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
                    answer = await mllp.send(discharge(n, "7"))
                    assert ack_code(answer) == "AA", answer[:200]
                    acks.append(time.monotonic())
            deadline = time.monotonic() + 30
            while len(arrivals(receiver)) < messages and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        arrived = arrivals(receiver)
        latencies = sorted((arrived[k + 1] - acks[k]) * 1000 for k in range(messages) if k + 1 in arrived)
        lost = messages - len(latencies)
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"# subscriptions: {messages} A03 over MLLP at {rate:g} msg/s, 1 topic subscription (id-only, signed), 2 cores")
        print(f"ACK -> notification latency: p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {latencies[-1]:.0f} ms (target p99 < 1000 ms)")
        print(f"notifications: {len(receiver.received) - 1} requests for {len(arrived)} events; lost {lost}; "
              f"bad signatures {receiver.refused_signatures}")
    finally:
        server.stop()
        database.stop()
        receiver.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=150)
    parser.add_argument("--rate", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(run(args.messages, args.rate))


if __name__ == "__main__":
    main()
