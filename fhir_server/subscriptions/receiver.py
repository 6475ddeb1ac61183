"""An example notification endpoint (`calipso receive`): a thread running http.server that
checks each request's signature, records what arrives, and can be told to fail or stall (the
tests and the benchmark use it as the real receiver it is)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import orjson

from fhir_server.subscriptions.signing import verify


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    secret: str
    url: str = ""
    answer: int = 200  # what it answers
    stall: float = 0.0  # seconds it waits before answering
    received: list[Received] = field(default_factory=list)
    refused_signatures: int = 0
    arriving: int = 0  # requests begun (answered or not)
    on_receive: Callable[[Received], None] | None = None
    _server: ThreadingHTTPServer | None = None

    def start(self, host: str = "127.0.0.1", port: int = 0) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                receiver.arriving += 1
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if not verify(receiver.secret, body, self.headers.get("X-Calipso-Signature", ""), int(time.time())):
                    receiver.refused_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                if receiver.stall:
                    time.sleep(receiver.stall)
                answer = receiver.answer
                if 200 <= answer < 300:
                    receiver.received.append(Received(time.monotonic(), dict(self.headers), body))
                    if receiver.on_receive is not None:
                        receiver.on_receive(receiver.received[-1])
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.url = f"http://{host}:{self._server.server_address[1]}/notify"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def bundles(self, kind: str = "event-notification") -> list[dict[str, Any]]:
        """The notification Bundles of one type received, in order."""
        found = []
        for item in self.received:
            if not item.body:
                continue
            bundle = item.json()
            if bundle.get("resourceType") == "Bundle" and status_of(bundle).get("type") == kind:
                found.append(bundle)
        return found

    def event_numbers(self) -> list[int]:
        return [number for bundle in self.bundles() for number in numbers(bundle)]


def status_of(bundle: dict[str, Any]) -> dict[str, Any]:
    """A notification's SubscriptionStatus parameters by name (notification-event: a list)."""
    parameters = bundle["entry"][0]["resource"]["parameter"]
    found: dict[str, Any] = {"notification-event": []}
    for parameter in parameters:
        if parameter["name"] == "notification-event":
            found["notification-event"].append({p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in parameter["part"]})
        else:
            found[parameter["name"]] = next(v for k, v in parameter.items() if k.startswith("value"))
    return found


def describe(item: Received) -> str:
    """One line about a request received: what `calipso receive` prints."""
    if not item.body:
        return "ping (empty body)"
    body = item.json()
    if body.get("resourceType") != "Bundle":
        return f"resource {body.get('resourceType')}/{body.get('id')}"
    status = status_of(body)
    events = ", ".join(f"#{e['event-number']} {e.get('focus', {}).get('reference', '')}".rstrip() for e in status["notification-event"])
    return f"{status.get('type')} from {status.get('subscription', {}).get('reference', '?')}: {events or 'no events'}"


def numbers(bundle: dict[str, Any]) -> Iterator[int]:
    for event in status_of(bundle)["notification-event"]:
        yield int(event["event-number"])


__all__ = ["Received", "Receiver", "describe", "numbers", "status_of"]
