"""The dev issuer's sign-in: an OAuth 2 authorization endpoint and token endpoint, enough for a
SMART standalone launch of the notebook app (`make run AUTH=on`) and for its browser tests.

DEVELOPMENT ONLY, like the dev issuer itself: the sign-in page lists the people the database
knows (practitioners, caregivers, patients) and lets anyone act as any of them. It exists only
when the dev issuer is trusted. The flow is the real one (authorization code with PKCE S256,
one-time codes bound to the client, its redirect URI and its challenge), so an app that signs in
here signs in the same way against a production authorization server.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import string
import time
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Callable
from urllib.parse import urlencode, urlsplit

from fhir_server.outcome import FhirError, Issue
from fhir_server.security.dev_issuer import ISSUER, DevIssuer

CODE_LIFETIME = 60  # seconds
MAX_PENDING = 1000
# What each kind of identity is given (the scopes the app asks for are not negotiated here).
SCOPES = {
    "Practitioner": "openid fhirUser user/*.cruds",
    "RelatedPerson": "openid fhirUser user/*.cruds",
    "Patient": "openid fhirUser launch/patient patient/*.cruds",
}
KIND_LABELS = {"Practitioner": "Professionnels", "RelatedPerson": "Proches aidants", "Patient": "Patients"}
PAGE = string.Template(files("fhir_server.security").joinpath("dev-sign-in.html").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Identity:
    reference: str  # "Practitioner/x"
    name: str
    detail: str = ""


@dataclass(frozen=True)
class _Pending:
    identity: str
    client_id: str
    redirect_uri: str
    challenge: str
    expires: float


def _refused(text: str) -> FhirError:
    return FhirError(400, Issue("invalid", text))


class DevSignIn:
    """One-time authorization codes, kept in memory for a minute."""

    def __init__(self, issuer: DevIssuer, audience: str, clock: Callable[[], float] = time.time):
        self._issuer, self._audience, self._clock = issuer, audience, clock
        self._pending: dict[str, _Pending] = {}

    def check_request(self, params: dict[str, str], origin: str) -> None:
        """An authorization request this sign-in serves: a code, PKCE S256, and a redirect back
        to this server (or to a loopback app): never an open redirect."""
        if params.get("response_type") != "code":
            raise _refused("response_type must be code")
        if not params.get("client_id"):
            raise _refused("client_id is missing")
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            raise _refused("PKCE is required: code_challenge with code_challenge_method=S256")
        target = urlsplit(params.get("redirect_uri", ""))
        if target.scheme not in ("http", "https") or not (f"{target.scheme}://{target.netloc}" == origin
                                                          or target.hostname in ("127.0.0.1", "localhost", "::1")):
            raise _refused("redirect_uri must lead back to this server or to a loopback app")

    def page(self, params: dict[str, str], identities: list[Identity]) -> str:
        """The sign-in page: one button per identity, in a form that posts back here."""
        hidden = "\n".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                           for k, v in sorted(params.items()) if k in REQUEST_FIELDS)
        sections = []
        for kind, label in KIND_LABELS.items():
            people = [i for i in identities if i.reference.startswith(kind + "/")]
            if not people:
                continue
            buttons = "\n".join(
                f'<li><button type="submit" name="identity" value="{html.escape(i.reference)}">'
                f'<span class="who">{html.escape(i.name)}</span>'
                + (f' <span class="detail">{html.escape(i.detail)}</span>' if i.detail else "") + "</button></li>"
                for i in people)
            sections.append(f'<section aria-labelledby="h-{kind}"><h2 id="h-{kind}">{label}</h2><ul>{buttons}</ul></section>')
        body = "\n".join(sections) or "<p>Aucune personne connue : chargez d'abord les données de démonstration (<code>make demo</code>).</p>"
        return PAGE.substitute(hidden=hidden, identities=body)

    def grant(self, params: dict[str, str], identity: str) -> str:
        """The redirect (with a one-time code) for the identity picked on the page."""
        if identity.split("/", 1)[0] not in SCOPES or "/" not in identity:
            raise _refused("Pick one of the listed people")
        now = self._clock()
        self._pending = {c: p for c, p in self._pending.items() if p.expires > now}
        if len(self._pending) >= MAX_PENDING:
            raise FhirError(429, Issue("throttled", "Too many sign-ins in progress"), headers={"Retry-After": "60"})
        code = secrets.token_urlsafe(24)
        self._pending[code] = _Pending(identity, params["client_id"], params["redirect_uri"], params["code_challenge"],
                                       now + CODE_LIFETIME)
        answer = {"code": code, **({"state": params["state"]} if params.get("state") else {})}
        separator = "&" if urlsplit(params["redirect_uri"]).query else "?"
        return params["redirect_uri"] + separator + urlencode(answer)

    def exchange(self, form: dict[str, str], base_url: str) -> dict[str, Any]:
        """The token response for an authorization code (RFC 6749 §4.1.3, RFC 7636 §4.6)."""
        if form.get("grant_type") != "authorization_code":
            raise OAuthError("unsupported_grant_type")
        pending = self._pending.pop(form.get("code", ""), None)  # one use, whatever happens next
        if pending is None or pending.expires <= self._clock():
            raise OAuthError("invalid_grant")
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not secrets.compare_digest(challenge, pending.challenge) or form.get("redirect_uri") != pending.redirect_uri \
                or form.get("client_id", pending.client_id) != pending.client_id:
            raise OAuthError("invalid_grant")
        kind, ident = pending.identity.split("/", 1)
        scope = SCOPES[kind]
        patient = ident if kind == "Patient" else None
        access = self._issuer.token(pending.identity, scope, self._audience, patient=patient, fhir_user=pending.identity,
                                    client_id=pending.client_id)
        id_token = self._issuer.token(pending.identity, "", pending.client_id, fhir_user=f"{base_url}/{pending.identity}")
        answer: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": 3600, "scope": scope,
                                  "id_token": id_token}
        if patient:
            answer["patient"] = patient
        return answer


REQUEST_FIELDS = ("response_type", "client_id", "redirect_uri", "scope", "state", "aud", "code_challenge",
                  "code_challenge_method", "launch")


class OAuthError(Exception):
    """A token request refused with an RFC 6749 §5.2 error code (answered as 400 JSON)."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


__all__ = ["ISSUER", "DevSignIn", "Identity", "OAuthError", "REQUEST_FIELDS"]
