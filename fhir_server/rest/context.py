"""What an endpoint finds on its request: the engine, the settings, the FHIR base URL."""

from __future__ import annotations

from starlette.requests import Request

from fhir_server.engine import Engine
from fhir_server.settings import Settings


def engine_of(request: Request) -> Engine:
    return request.app.state.engine


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def base_url(request: Request) -> str:
    """The FHIR base the client used (or the configured public one)."""
    configured = settings_of(request).public_base_url
    if configured:
        return configured.rstrip("/")
    return f"{str(request.base_url).rstrip('/')}/fhir"


__all__ = ["base_url", "engine_of", "settings_of"]
