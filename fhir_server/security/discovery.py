"""What a SMART client reads before it asks for a token: `.well-known/smart-configuration`,
the CapabilityStatement's `rest.security`, and the dev issuer's JWKS."""

from __future__ import annotations

from typing import Any

from fhir_server.security.dev_issuer import ISSUER as DEV_ISSUER
from fhir_server.settings import Settings

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"
CAPABILITIES = [
    "launch-standalone", "context-standalone-patient", "client-confidential-asymmetric", "client-public",
    "permission-patient", "permission-user", "permission-v1", "permission-v2",
]
SCOPES = ["openid", "fhirUser", "launch/patient", "patient/*.rs", "patient/*.read", "user/*.cruds", "user/*.read",
          "user/*.write", "system/*.cruds", "system/*.read", "system/*.write"]


def smart_configuration(settings: Settings, base_url: str) -> dict[str, Any]:
    """SMART App Launch discovery. calipso checks tokens; it does not hand them out: the
    authorization and token endpoints are those of the configured authorization server."""
    config: dict[str, Any] = {
        "capabilities": CAPABILITIES,
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
    }
    if settings.auth_issuer:
        config["issuer"] = settings.auth_issuer
    elif settings.dev_issuer:
        config["issuer"] = DEV_ISSUER
    if settings.auth_jwks_url:
        config["jwks_uri"] = settings.auth_jwks_url
    elif settings.dev_issuer:
        config["jwks_uri"] = f"{base_url}/.well-known/jwks.json"
    origin = base_url.rsplit("/fhir", 1)[0]
    if settings.auth_authorize_url:
        config["authorization_endpoint"] = settings.auth_authorize_url
    elif settings.dev_issuer:  # the dev issuer's sign-in page (security/dev_sign_in.py): development only
        config["authorization_endpoint"] = f"{origin}/dev-auth/authorize"
    if settings.auth_token_url:
        config["token_endpoint"] = settings.auth_token_url
    elif settings.dev_issuer:
        config["token_endpoint"] = f"{origin}/dev-auth/token"
    return config


def rest_security(settings: Settings) -> dict[str, Any] | None:
    """The CapabilityStatement's `rest.security` (None when authentication is off)."""
    if not settings.auth:
        return None
    security: dict[str, Any] = {
        "cors": bool(settings.cors_origins),
        "service": [{"coding": [{"system": SECURITY_SERVICE, "code": "SMART-on-FHIR"}], "text": "OAuth2 using SMART-on-FHIR profile"}],
        "description": "Bearer tokens (JWT, RS256 or ES256) with SMART v1/v2 scopes; a practitioner reaches the "
                       "patients of whose active CareTeam it is a participant.",
    }
    uris = [{"url": name, "valueUri": url} for name, url in (("authorize", settings.auth_authorize_url), ("token", settings.auth_token_url)) if url]
    if uris:
        security["extension"] = [{"url": OAUTH_URIS, "extension": uris}]
    return security


__all__ = ["rest_security", "smart_configuration"]
