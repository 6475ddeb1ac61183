"""Bearer tokens: JWTs (RS256, ES256) checked against the keys of trusted issuers.

A remote issuer publishes its keys as a JWKS at a URL: the set is cached for its
`Cache-Control: max-age` (bounded), fetched again when a token names a key id the cache does
not hold (key rotation; at most once per `min_refresh` seconds, so garbage key ids cannot make
us hammer the issuer), and kept in use while the issuer is unreachable (an outage must not log
every user out). With no keys at all the token cannot be checked: that is a 503, not a 401.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import jwt

ALGORITHMS = ("RS256", "ES256")
MAX_AGE = re.compile(r"max-age=(\d+)")

log = logging.getLogger("calipso.security")


class InvalidToken(Exception):
    """The token is missing, malformed, expired, not for us or not signed by a trusted key."""


class KeysUnavailable(Exception):
    """The issuer's keys cannot be fetched and none are cached: tokens cannot be checked now."""


@dataclass(frozen=True)
class Claims:
    """What calipso reads from a verified token."""

    subject: str
    scope: str
    patient: str | None = None  # SMART launch context
    fhir_user: str | None = None  # "Practitioner/x", "PractitionerRole/x", "Patient/x", "RelatedPerson/x"
    client_id: str | None = None
    expires: float | None = None  # `exp`, seconds since the epoch

    @classmethod
    def of(cls, payload: dict[str, Any]) -> "Claims":
        scope = payload.get("scope", payload.get("scp", ""))
        if isinstance(scope, list):
            scope = " ".join(str(s) for s in scope)
        fhir_user = payload.get("fhirUser")
        if isinstance(fhir_user, str) and "/" in fhir_user:
            fhir_user = "/".join(fhir_user.rstrip("/").split("/")[-2:])  # an absolute URL: keep Type/id
        patient = payload.get("patient")
        return cls(
            subject=str(payload.get("sub", "")),
            scope=str(scope),
            patient=patient if isinstance(patient, str) and patient else None,
            fhir_user=fhir_user if isinstance(fhir_user, str) and fhir_user else None,
            client_id=str(payload["client_id"]) if "client_id" in payload else None,
            expires=float(payload["exp"]) if isinstance(payload.get("exp"), (int, float)) else None,
        )


class KeySource(Protocol):
    async def key(self, kid: str | None) -> Any | None: ...


class StaticKeys:
    """Keys known in advance (the dev issuer's own key)."""

    def __init__(self, jwks: dict[str, Any]):
        self._keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys}

    async def key(self, kid: str | None) -> Any | None:
        found = self._keys.get(kid) if kid else (next(iter(self._keys.values())) if len(self._keys) == 1 else None)
        return found.key if found else None


class RemoteJwks:
    """An issuer's JWKS fetched over HTTP with httpx, cached, refreshed on rotation."""

    def __init__(self, url: str, client: httpx.AsyncClient | None = None, default_ttl: float = 300.0,
                 max_ttl: float = 3600.0, min_refresh: float = 10.0, clock: Any = time.monotonic):
        self.url = url
        self._client = client or httpx.AsyncClient(timeout=5.0)
        self._default_ttl, self._max_ttl, self._min_refresh = default_ttl, max_ttl, min_refresh
        self._clock = clock
        self._keys: dict[str | None, Any] = {}
        self._fetched_at: float | None = None
        self._expires_at = 0.0

    async def key(self, kid: str | None) -> Any | None:
        now = self._clock()
        stale = now >= self._expires_at
        unknown = kid not in self._keys
        may_refresh = self._fetched_at is None or now - self._fetched_at >= self._min_refresh
        if (stale or unknown) and may_refresh:
            await self._refresh(now)
        found = self._keys.get(kid)
        return found.key if found else None

    async def _refresh(self, now: float) -> None:
        try:
            response = await self._client.get(self.url, headers={"Accept": "application/json"})
            response.raise_for_status()
            keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(response.json()).keys}
        except (httpx.HTTPError, ValueError, jwt.PyJWKError, jwt.PyJWKSetError) as error:
            self._fetched_at = now  # do not retry on every request during an outage
            if not self._keys:
                raise KeysUnavailable(f"the issuer's keys could not be fetched ({type(error).__name__})") from None
            log.warning("jwks refresh failed, keeping %d cached keys error=%s", len(self._keys), type(error).__name__)
            return
        self._keys = keys
        self._fetched_at = now
        self._expires_at = now + self._ttl(response.headers.get("cache-control", ""))

    def _ttl(self, cache_control: str) -> float:
        match = MAX_AGE.search(cache_control)
        return min(float(match.group(1)), self._max_ttl) if match else self._default_ttl


class TokenVerifier:
    """Checks signature, issuer, audience, expiry and not-before (with clock skew)."""

    def __init__(self, issuers: dict[str, KeySource], audience: str, leeway: float = 60.0):
        self._issuers = issuers
        self._audience = audience
        self._leeway = leeway

    async def verify(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise InvalidToken("the token is not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise InvalidToken("the token's algorithm is not accepted (RS256 or ES256)")
        issuer = unverified.get("iss")
        source = self._issuers.get(issuer) if isinstance(issuer, str) else None
        if source is None:
            raise InvalidToken("the token's issuer is not trusted")
        key = await source.key(header.get("kid"))
        if key is None:
            raise InvalidToken("the token is signed with a key the issuer does not publish")
        try:
            payload = jwt.decode(
                token, key, algorithms=[algorithm], audience=self._audience, issuer=issuer, leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("the token is for another audience") from None
        except jwt.PyJWTError:
            raise InvalidToken("the token's signature or claims are invalid") from None
        return Claims.of(payload)


__all__ = ["Claims", "InvalidToken", "KeySource", "KeysUnavailable", "RemoteJwks", "StaticKeys", "TokenVerifier"]
