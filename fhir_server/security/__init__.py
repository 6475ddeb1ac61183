"""Security: bearer tokens (SMART on FHIR), the care-team access policy, the request gate."""

from __future__ import annotations

from typing import Callable

from fhir_server.security.dev_issuer import ISSUER as DEV_ISSUER
from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.security.gate import Gate
from fhir_server.security.policy import ACCESS, UNRESTRICTED, Access
from fhir_server.security.tokens import KeySource, RemoteJwks, StaticKeys, TokenVerifier
from fhir_server.settings import Settings
from fhir_server.storage.circle import CircleStore


def build_gate(settings: Settings, circles: CircleStore, circle_changes: Callable[[], int]) -> tuple[Gate, DevIssuer | None]:
    """The gate these settings ask for, and the dev issuer when it is trusted."""
    if not settings.auth:
        return Gate(None, circles), None
    issuers: dict[str, KeySource] = {}
    dev = None
    if settings.auth_issuer and settings.auth_jwks_url:
        issuers[settings.auth_issuer] = RemoteJwks(settings.auth_jwks_url)
    if settings.dev_issuer:
        dev = DevIssuer(settings.data_dir)
        issuers[DEV_ISSUER] = StaticKeys(dev.jwks())
    if not issuers:
        raise ValueError("authentication is on but no token issuer is configured")
    verifier = TokenVerifier(issuers, settings.auth_audience, settings.auth_leeway_seconds)
    return Gate(verifier, circles, circle_changes), dev


__all__ = ["ACCESS", "Access", "DevIssuer", "Gate", "UNRESTRICTED", "build_gate"]
