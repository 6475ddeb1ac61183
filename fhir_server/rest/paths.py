"""`[base]/`, `[base]/Patient/`, `[base]/metadata/` mean the same as without the slash.

fhirclient, fhir-kit-client and fhirpy post transactions and batches to `[base]/`, and some
clients build type URLs with a trailing slash; R4 does not define the slashed forms, so the
one trailing slash of a FHIR path is dropped before routing (and before every access check,
which is decided per route).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

FHIR_PREFIX = "/fhir/"


class TrailingSlash:
    """ASGI middleware: `/fhir/...x/` is routed as `/fhir/...x`."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path.startswith(FHIR_PREFIX) and path.endswith("/") and not path.endswith("//"):
                scope = dict(scope, path=path[:-1])
                raw = scope.get("raw_path")
                if isinstance(raw, bytes) and raw.endswith(b"/"):
                    scope["raw_path"] = raw[:-1]
        await self.app(scope, receive, send)


__all__ = ["TrailingSlash"]
