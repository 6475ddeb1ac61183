"""A deadline on an HTTP request's head: a client that trickles its request line and headers
(slow-loris) is cut off instead of holding a connection for ever.

uvicorn times out an idle keep-alive connection, but once a request's first byte has arrived it
waits for the rest of the head without limit, and a fresh connection that sends nothing is never
timed out. This protocol (uvicorn's httptools one) arms a timer when a connection opens and when
a request begins, and disarms it when the head is complete; when it fires, the connection is
closed. The body is not under this deadline: the app reads it, bounded by the body limits.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's head (`head_seconds`)."""

    head_seconds: float = 20.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        self._arm()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        """Start the clock unless it already runs (a connection's first request keeps its start)."""
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.head_seconds, self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def with_head_deadline(seconds: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class to give uvicorn, its deadline set to `seconds`."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"head_seconds": seconds})


__all__ = ["HeaderDeadlineProtocol", "with_head_deadline"]
