"""Read entries of a Bundle run through the application itself, as the client's own GETs.

The sub-request carries the client's headers (so any access control applies to it as to
the client) plus the entry's conditional headers, and goes through routing, middleware and
error handling exactly as an HTTP request would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from starlette.requests import Request

FORWARDED_HEADERS = ("host", "authorization", "accept-language", "prefer")


@dataclass(frozen=True)
class SubResponse:
    status: int
    headers: dict[str, str]
    body: bytes


SUBREQUEST = "calipso.subrequest"


async def subrequest(parent: Request, method: str, url: str, extra_headers: dict[str, str]) -> SubResponse:
    """`method url` (relative to the FHIR base) answered by the application, in process."""
    path, _, query = url.partition("?")
    decoded = "/fhir/" + unquote(path).lstrip("/")
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in parent.headers.items() if k in FORWARDED_HEADERS]
    headers += [(b"accept", b"application/fhir+json")]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1", "replace")) for k, v in extra_headers.items()]
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": parent.scope.get("asgi", {"version": "3.0"}),
        "http_version": "1.1",
        "method": method,
        "scheme": parent.url.scheme,
        "path": decoded,
        "raw_path": quote(decoded).encode("ascii"),
        "root_path": parent.scope.get("root_path", ""),
        "query_string": query.encode("utf-8"),
        "headers": headers,
        "client": parent.scope.get("client"),
        "server": parent.scope.get("server"),
        "state": dict(parent.scope.get("state") or {}),
        SUBREQUEST: True,  # runs inside its parent's admission slot (rest/routes.py)
    }
    started: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            started.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await parent.app(scope, receive, send)
    response_headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in started.get("headers", [])}
    return SubResponse(started.get("status", 500), response_headers, b"".join(chunks))


__all__ = ["SubResponse", "subrequest"]
