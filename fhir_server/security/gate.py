"""The door every FHIR request goes through: who is calling (bearer token), what their scopes
let them do with this endpoint, and which patients they reach (the care-team policy).

Denials, decided once and documented in docs/security.md:
- no token or an invalid one: 401 with `WWW-Authenticate: Bearer`;
- a valid token whose scopes do not cover the interaction on the type: 403;
- a resource outside the compartments the token reaches: 404 on read, exactly as if it did
  not exist (a 403 would confirm that it does), and absent from every search result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import replace
from datetime import datetime, timezone
from typing import Callable

from starlette.requests import HTTPConnection, Request

from fhir_server.outcome import FhirError, Issue
from fhir_server.security.objection import objecting
from fhir_server.security.permissions import Permission
from fhir_server.security.policy import NOBODY, NOTEBOOK_TYPES, UNRESTRICTED, VISIBILITY, Access, care_circle
from fhir_server.security.scopes import Grant
from fhir_server.storage.circle import CircleStore
from fhir_server.security.tokens import Claims, InvalidToken, KeysUnavailable, TokenVerifier

log = logging.getLogger("calipso.security")

ACCESS_TTL = 5.0  # seconds a token's Access is reused without looking at the care circle again
MAX_CACHED = 10_000
def unauthorized(text: str, presented: bool = True) -> FhirError:
    """401; `error="invalid_token"` only when a token was presented (RFC 6750 section 3)."""
    challenge = 'Bearer realm="calipso", error="invalid_token"' if presented else 'Bearer realm="calipso"'
    return FhirError(401, Issue("login", text), headers={"WWW-Authenticate": challenge})


def forbidden(text: str) -> FhirError:
    return FhirError(403, Issue("forbidden", text))


class Gate:
    """Turns a request's bearer token into an Access, or refuses the request.

    A token's Access is kept for a few seconds (an app sends the same token with every
    request): not past the token's expiry, and dropped as soon as this process commits a
    change to a care team, a practitioner role or a related person. Another process's change
    is seen within ACCESS_TTL."""

    def __init__(self, verifier: TokenVerifier | None, circles: CircleStore, circle_changes: Callable[[], int] = lambda: 0,
                 clock: Callable[[], float] = time.time):
        self._verifier = verifier  # None: auth off
        self._circles = circles  # care teams, roles, related persons, consents
        self._circle_changes = circle_changes
        self._clock = clock
        self._cache: OrderedDict[str, tuple[Access, float, int]] = OrderedDict()
        self._deciding: dict[str, asyncio.Future[tuple[Access, float]]] = {}  # one decision per token at a time

    async def identify(self, request: HTTPConnection, permission: Permission | None) -> Access:
        """Who calls, and what they reach (401 without a valid token). A public route reaches no data."""
        if permission is not None and permission.public:
            return NOBODY
        if self._verifier is None:
            return UNRESTRICTED
        return await self._access(request)

    async def _access(self, request: HTTPConnection) -> Access:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("This server needs a bearer token (SMART on FHIR)", presented=False)
        token = token.strip()
        now, changes = self._clock(), self._circle_changes()
        cached = self._cache.get(token)
        if cached is not None and now < cached[1] and cached[2] == changes:
            return cached[0]
        pending = self._deciding.get(token)
        if pending is not None:  # the app's other requests with this token wait for the same decision
            access, _ = await asyncio.shield(pending)
            return access
        pending = asyncio.get_running_loop().create_future()
        self._deciding[token] = pending
        try:
            access, expires = await self._decide(token)
        except BaseException as error:
            pending.set_exception(error)
            pending.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        else:
            pending.set_result((access, expires))
        finally:
            del self._deciding[token]
        self._cache[token] = (access, min(now + ACCESS_TTL, expires), changes)
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)
        return access

    async def _decide(self, token: str) -> tuple[Access, float]:
        """The Access of a token checked now, and until when the token is valid."""
        try:
            claims = await self._verifier.verify(token)  # type: ignore[union-attr]
        except InvalidToken as error:
            raise unauthorized(str(error)) from None
        except KeysUnavailable:
            log.error("token keys unavailable: the issuer's JWKS cannot be fetched")
            raise FhirError(503, Issue("transient", "Tokens cannot be checked right now; retry shortly"), headers={"Retry-After": "5"}) from None
        expires = claims.expires if claims.expires is not None else self._clock()
        return await self.access_of(claims), expires

    async def access_of(self, claims: Claims | None) -> Access:
        """What a verified token's claims reach now (the care circle as it stands): a request's
        Access, or a subscription's when it sends (None: the server runs without tokens)."""
        if claims is None:
            return UNRESTRICTED if self._verifier is None else NOBODY
        return replace(await self._claims_access(claims), claims=claims)

    async def _claims_access(self, claims: Claims) -> Access:
        grant = Grant.parse(claims.scope)
        contexts = grant.contexts()
        if "system" in contexts:
            return Access(grant, "system", who=f"system:{claims.client_id or claims.subject}")
        if "user" in contexts and claims.fhir_user:
            return await self._user_access(grant, claims.fhir_user)
        if "patient" in contexts:
            fhir_user = claims.fhir_user or ""
            patient = claims.patient or (fhir_user.split("/", 1)[1] if fhir_user.startswith("Patient/") else None)
            if patient is None:
                raise forbidden("patient/ scopes need a patient launch context")
            return Access(grant, "patient", frozenset({patient}), who=f"Patient/{patient}",
                          audiences=VISIBILITY.audiences_of("Patient"), authors=frozenset({f"Patient/{patient}"}))
        raise forbidden("The token grants no FHIR scope this server knows (patient/, user/ or system/)")

    async def _user_access(self, grant: Grant, fhir_user: str) -> Access:
        kind, _, ident = fhir_user.partition("/")
        if kind == "Patient":
            return Access(grant, "user", frozenset({ident}), who=fhir_user, audiences=VISIBILITY.audiences_of(kind),
                          authors=frozenset({fhir_user}))
        now = datetime.now(timezone.utc)
        if kind == "RelatedPerson":
            linked, relationships = await self._related_person(ident)
            objecting_patients = await objecting(self._circles, linked, [fhir_user], {}, now)
            return Access(grant, "user", linked - objecting_patients, NOTEBOOK_TYPES, who=fhir_user,
                          audiences=VISIBILITY.audiences_of(kind, relationships), authors=frozenset({fhir_user}))
        if kind in ("Practitioner", "PractitionerRole"):
            members = await self._identities(kind, ident)
            circle = await care_circle(self._circles, members, now)
            objecting_patients = await objecting(self._circles, circle.patients, members, circle.roles, now)
            return Access(grant, "user", circle.patients - objecting_patients, who=fhir_user,
                          coordinates=circle.coordinates - objecting_patients,
                          audiences=VISIBILITY.audiences_of(kind), authors=frozenset(members))
        return Access(grant, "user", frozenset(), who=fhir_user)

    async def _identities(self, kind: str, ident: str) -> list[str]:
        """The references under which this user may sit in a care team: the practitioner and
        its roles (or the role and its practitioner)."""
        if kind == "PractitionerRole":
            return [f"{kind}/{ident}", *await self._circles.practitioners_of_role(ident)]
        return [f"{kind}/{ident}", *await self._circles.roles_of_practitioner(ident)]

    async def _related_person(self, ident: str) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
        """The patient a RelatedPerson is linked to, and its relationship codings (system, code)."""
        links, relationships = await self._circles.related_person(ident)
        return (frozenset(link.split("/", 1)[1] for link in links if link.startswith("Patient/")), frozenset(relationships))

    @staticmethod
    def authorize(request: Request, permission: Permission | None, access: Access) -> None:
        """403 unless the route declares a permission and the token's scopes meet it."""
        if permission is None:
            raise forbidden("This endpoint declares no access rule, so nobody may use it")
        if permission.public or access.grant is None:
            return
        if permission.system_only and not (access.context == "system" and access.unrestricted):
            raise forbidden("This endpoint takes system/ scopes only (a resource's own history takes user/ and patient/ scopes)")
        if permission.letter is None:
            return  # checked by the endpoint: each Bundle entry, each exported type, the owner of an export job
        for resource_type in permission.types(request):
            if not access.may(resource_type, permission.letter):
                raise forbidden(f"The token's scopes do not allow this interaction on {resource_type[:40]}")


__all__ = ["Gate", "forbidden", "unauthorized"]
