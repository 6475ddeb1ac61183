"""Response headers that keep browsers from doing anything clever with health data, and a
per-client rate limit."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable

from fhir_server.outcome import FhirError, Issue

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),  # health data stays out of shared caches
]
HSTS = (b"strict-transport-security", b"max-age=31536000")


class SecurityHeaders:
    """Pure ASGI middleware: the headers above on every response (an endpoint's own
    Cache-Control wins), HSTS when the request came over https."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = SECURITY_HEADERS + ([HSTS] if scope.get("scheme") == "https" else [])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [(n, v) for n, v in extra if n not in present]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RateLimiter:
    """A token bucket per client (the token's user, or the address without one): `rate`
    requests per second on average, bursts of `burst`. The least recently seen clients are
    forgotten beyond `max_clients`, so memory stays bounded."""

    def __init__(self, rate: float, burst: int, max_clients: int = 100_000, clock: Callable[[], float] = time.monotonic):
        self._rate, self._burst, self._max = rate, burst, max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def check(self, client: str) -> None:
        """Take one request from the client's bucket; 429 with Retry-After when it is empty."""
        now = self._clock()
        tokens, seen = self._buckets.pop(client, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - seen) * self._rate)
        if tokens < 1:
            self._buckets[client] = (tokens, now)
            wait = max(1, int((1 - tokens) / self._rate + 0.999))
            raise FhirError(429, Issue("throttled", "Too many requests from this client; slow down"), headers={"Retry-After": str(wait)})
        self._buckets[client] = (tokens - 1, now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)


__all__ = ["RateLimiter", "SecurityHeaders"]
