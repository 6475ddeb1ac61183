"""HTTP side of the dev issuer's sign-in (security/dev_sign_in.py): the page at
`/dev-auth/authorize` and the token endpoint at `/dev-auth/token`. 404 unless the dev issuer
is trusted. DEVELOPMENT ONLY."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from fhir_server.outcome import FhirError
from fhir_server.rest.body import read_body
from fhir_server.rest.context import base_url, engine_of
from fhir_server.security.dev_sign_in import REQUEST_FIELDS, DevSignIn, Identity, OAuthError
from fhir_server.security.policy import SYSTEM, acting_as

LISTED = 100  # people of each kind shown on the page
PAGE_POLICY = "default-src 'none'; style-src 'self'; form-action 'self' http: https:; base-uri 'none'; frame-ancestors 'none'"


def _sign_in(request: Request) -> DevSignIn:
    found = getattr(request.app.state, "dev_sign_in", None)
    if found is None:
        raise FhirError.of(404, "not-found", "This server runs no dev issuer, so it has no sign-in page")
    return found


def _origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


async def authorize_page(request: Request) -> Response:
    sign_in = _sign_in(request)
    params = {k: v for k, v in request.query_params.items() if k in REQUEST_FIELDS}
    sign_in.check_request(params, _origin(request))
    page = sign_in.page(params, await _identities(request))
    return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})


async def authorize_choice(request: Request) -> Response:
    sign_in = _sign_in(request)
    form = await _form(request)
    params = {k: v for k, v in form.items() if k in REQUEST_FIELDS}
    sign_in.check_request(params, _origin(request))
    return RedirectResponse(sign_in.grant(params, form.get("identity", "")), status_code=303)


async def token(request: Request) -> Response:
    sign_in = _sign_in(request)
    try:
        answer = sign_in.exchange(await _form(request), base_url(request))
    except OAuthError as error:
        return JSONResponse({"error": error.code}, 400, headers={"Cache-Control": "no-store"})
    return JSONResponse(answer, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


async def _form(request: Request) -> dict[str, str]:
    body = await read_body(request, 16_384)
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        raise FhirError.of(400, "structure", "The form must be application/x-www-form-urlencoded UTF-8") from None


async def _identities(request: Request) -> list[Identity]:
    """Practitioners (with their role in care teams), caregivers and patients the database knows."""
    engine = engine_of(request)
    base = base_url(request)
    with acting_as(SYSTEM):  # development only: the page is the dev issuer's, not a client's request
        teams = await engine.searcher.search("CareTeam", [("status", "active"), ("_count", str(LISTED))], False, base)
        practitioners = await engine.searcher.search("Practitioner", [("_count", str(LISTED))], False, base)
        caregivers = await engine.searcher.search("RelatedPerson", [("_count", str(LISTED))], False, base)
        patients = await engine.searcher.search("Patient", [("_count", str(LISTED))], False, base)
    roles: dict[str, str] = {}
    for team in _resources(teams.matches):
        for participant in team.get("participant") or []:
            member = (participant.get("member") or {}).get("reference")
            role = _role_text(participant.get("role") or [])
            if member and role:
                roles.setdefault(member, role)
    found = []
    for kind, result in (("Practitioner", practitioners), ("RelatedPerson", caregivers), ("Patient", patients)):
        for resource in _resources(result.matches):
            reference = f"{kind}/{resource['id']}"
            found.append(Identity(reference, _name(resource), roles.get(reference, "")))
    return sorted(found, key=lambda i: (i.reference.split("/")[0], i.name))


def _resources(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [orjson.loads(bytes(row["raw"])) for row in rows]


def _role_text(roles: list[dict[str, Any]]) -> str:
    for role in roles:
        if role.get("text"):
            return str(role["text"])
        for coding in role.get("coding") or []:
            if coding.get("display") or coding.get("code"):
                return str(coding.get("display") or coding["code"])
    return ""


def _name(resource: dict[str, Any]) -> str:
    for name in resource.get("name") or []:
        if name.get("text"):
            return str(name["text"])
        parts = [*name.get("prefix", []), *name.get("given", []), str(name.get("family", "")).upper()]
        text = " ".join(p for p in parts if p)
        if text:
            return text
    return f"{resource['resourceType']}/{resource['id']}"


__all__ = ["authorize_choice", "authorize_page", "token"]
