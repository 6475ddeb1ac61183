"""create_app: the FastAPI application, its database connection and its error answers."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from fhir_server import __version__
from fhir_server.ig.install import install_guide
from hl7v2_bridge import MllpListener, listener_settings
from fhir_server.outcome import Issue
from fhir_server.rest.access_log import AccessLog
from fhir_server.rest.hardening import RateLimiter, SecurityHeaders
from fhir_server.rest.paths import TrailingSlash
from fhir_server.rest.responses import outcome_response
from fhir_server.rest.routes import ROUTES, guarded
from fhir_server.subscriptions.socket import subscription_socket
from fhir_server.security import build_gate
from fhir_server.security.audit import message_recorder
from fhir_server.security.dev_sign_in import DevSignIn
from fhir_server.settings import Settings
from fhir_server.services import build_dispatcher, build_export_worker, build_services
from fhir_server.storage.circle import CircleStore
from fhir_server.storage.connection import connect

log = logging.getLogger("calipso.app")

HTTP_ISSUE_CODES = {404: "not-found", 405: "not-supported"}


def create_app(settings: Settings, when_ready: Callable[[], None] | None = None) -> FastAPI:
    """The FHIR server for these settings; the database must already be reachable at start.
    `when_ready` runs once start-up is done, before the first request (the process's owner
    uses it: `calipso serve` freezes its start-up heap)."""
    if not settings.mongodb_uri:
        raise ValueError("create_app needs settings.mongodb_uri (the CLI starts the embedded database)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(settings)
        engine, store = services.engine, services.store
        if settings.serve_guide:
            await install_guide(engine)
        app.state.engine = engine
        app.state.gate, app.state.dev_issuer = build_gate(settings, CircleStore(store.current_versions), lambda: engine.care_circle_changes)
        if app.state.dev_issuer is not None:
            app.state.dev_sign_in = DevSignIn(app.state.dev_issuer, settings.auth_audience)
        app.state.audit = services.audit
        app.state.bridge = services.bridge
        dispatcher = build_dispatcher(settings, services, app.state.gate.access_of) if settings.subscriptions else None
        if dispatcher is not None:
            await dispatcher.start()
        app.state.dispatcher = dispatcher
        app.state.export_worker = build_export_worker(settings, services, app.state.gate.access_of)
        await app.state.export_worker.start()
        listener = None
        if settings.mllp_port is not None:
            listener = MllpListener(app.state.bridge, listener_settings(settings), message_recorder(app.state.audit))
            app.state.mllp_port = await listener.start()
        if when_ready is not None:
            when_ready()
        log.info("fhir api ready database=%s", settings.database)
        try:
            yield
        finally:
            if listener is not None:
                await listener.stop()
            if dispatcher is not None:
                await dispatcher.stop()
            await app.state.export_worker.stop()
            await services.close()

    app = FastAPI(
        title="calipso",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.router.redirect_slashes = False  # no redirects: a trailing slash is dropped before routing (rest/paths.py)
    for route in ROUTES:
        app.router.routes.append(Route(route.path, guarded(route), methods=[route.method]))
    # the one route outside the gate: a websocket is bound by a one-time token that an
    # authorized `$get-ws-binding-token` gave (subscriptions/socket.py decides with it)
    app.router.routes.append(WebSocketRoute("/fhir/$subscription-websocket", subscription_socket))
    app.add_exception_handler(HTTPException, _http_error)
    app.state.admission = asyncio.Semaphore(settings.http_concurrency) if settings.http_concurrency > 0 else None
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst) if settings.rate_limit_per_second > 0 else None
    if settings.cors_origins:  # off unless configured: browsers only reach us from the listed apps
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "If-Match", "If-None-Exist", "If-None-Match", "Prefer"],
                           expose_headers=["ETag", "Location", "Content-Location", "Last-Modified"])
    app.add_middleware(SecurityHeaders)
    app.add_middleware(AccessLog)
    app.add_middleware(TrailingSlash)
    return app


async def _http_error(request: Request, error: Exception) -> Response:
    """Router errors (no such URL, method not allowed) as OperationOutcomes."""
    assert isinstance(error, HTTPException)
    code = HTTP_ISSUE_CODES.get(error.status_code, "processing")
    text = {404: f"No FHIR endpoint at {request.url.path[:100]}", 405: f"{request.method} is not allowed here"}
    issue = Issue(code, text.get(error.status_code, str(error.detail)[:200]))
    return outcome_response(error.status_code, [issue], dict(error.headers or {}))


__all__ = ["connect", "create_app"]
