"""A real HTTP endpoint for subscription notifications (a thread running http.server on a
loopback port, not a mock): it records what arrives and can be told to fail or stall."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

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
    _server: ThreadingHTTPServer | None = None

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
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
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/notify"
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


def numbers(bundle: dict[str, Any]) -> Iterator[int]:
    for event in status_of(bundle)["notification-event"]:
        yield int(event["event-number"])


__all__ = ["Received", "Receiver", "numbers", "status_of"]
