"""The notebook web app's server side: its static files and their security headers, the dev
issuer's sign-in (authorization code with PKCE), and `calipso demo`. The app itself runs in a
real browser in tests/test_webapp_browser.py."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import replace
from pathlib import Path
from typing import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from fastapi import FastAPI

from fhir_server.app import create_app
from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.security.dev_sign_in import DevSignIn
from fhir_server.settings import Settings
from fhir_server.webapp.serving import STATIC_DIR
from tests.conftest import project_root, running
from tests.webapp_fixtures import DemoServer

REDIRECT = "http://calipso.test/app/"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_params(challenge: str, **changes: str) -> dict[str, str]:
    params = {"response_type": "code", "client_id": "calipso-carnet", "redirect_uri": REDIRECT, "scope": "openid fhirUser user/*.cruds",
              "state": "xyz", "aud": "http://calipso.test/fhir", "code_challenge": challenge, "code_challenge_method": "S256"}
    return {**params, **changes}


@pytest.fixture
async def signing_app(settings: Settings, tmp_path: Path) -> AsyncIterator[FastAPI]:
    async with running(create_app(replace(settings, auth=True, dev_issuer=True, data_dir=tmp_path))) as app:
        yield app


@pytest.fixture
async def web(signing_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=signing_app), base_url="http://calipso.test") as http:
        yield http


# -- static files ---------------------------------------------------------------------------------


async def test_the_app_page_runs_only_its_own_scripts(web: httpx.AsyncClient) -> None:
    page = await web.get("/app/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<html lang="fr">' in page.text
    policy = page.headers["content-security-policy"]
    import_map = re.search(r'<script type="importmap">(.*?)</script>', page.text, re.S)
    assert import_map is not None
    digest = base64.b64encode(hashlib.sha256(import_map.group(1).encode()).digest()).decode()
    assert f"'sha256-{digest}'" in policy  # the inline import map, and no other inline script
    assert "'unsafe-inline'" not in policy and "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy
    for src in re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page.text):  # everything it loads is served here
        assert (await web.get(f"/app/{src}")).status_code == 200, src


async def test_static_files_have_types_etags_and_nothing_outside(web: httpx.AsyncClient) -> None:
    script = await web.get("/app/js/main.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert (await web.get("/app/js/main.js", headers={"If-None-Match": script.headers["etag"]})).status_code == 304
    for outside in ("/app/../fhir_server/settings.py", "/app/%2e%2e/serving.py", "/app/vendor.py", "/app/nothing.js"):
        assert (await web.get(outside)).status_code == 404, outside
    moved = await web.get("/app", follow_redirects=False)
    assert moved.status_code == 308 and moved.headers["location"] == "/app/"


async def test_guide_json_offers_the_guides_entry_kinds(web: httpx.AsyncClient) -> None:
    guide = (await web.get("/app/guide.json")).json()
    code_system = orjson.loads((project_root() / "profiles" / "CodeSystem-entry-kind.json").read_bytes())
    assert [k["code"] for k in guide["kinds"]] == [c["code"] for c in code_system["concept"]]
    assert [k["code"] for k in guide["kinds"] if k["receipt"]] == ["ack"]
    observation = next(k for k in guide["kinds"] if k["code"] == "observation")
    assert observation["noteType"]["code"] == "OBS"  # the guide's ConceptMap
    assert guide["profiles"]["receipt"].endswith("/StructureDefinition/notebook-acknowledgement")


def test_the_vendored_files_are_the_locked_npm_packages() -> None:
    """static/vendor holds exactly the files of the npm packages package-lock.json pins (their
    tarballs checked against its integrity): no hand edits."""
    from fhir_server.webapp.vendor import VENDOR_DIR, install, vendored_files

    modules = install()
    for source, name in vendored_files().items():
        assert (VENDOR_DIR / name).read_bytes() == (modules / source).read_bytes(), name
    lock = orjson.loads((STATIC_DIR.parent / "package-lock.json").read_bytes())
    wanted = orjson.loads((STATIC_DIR.parent / "package.json").read_bytes())["dependencies"]
    for package, version in wanted.items():
        assert lock["packages"][f"node_modules/{package}"]["version"] == version


# -- dev sign-in ----------------------------------------------------------------------------------


async def test_smart_configuration_names_the_dev_sign_in(web: httpx.AsyncClient) -> None:
    config = (await web.get("/fhir/.well-known/smart-configuration")).json()
    assert config["authorization_endpoint"] == "http://calipso.test/dev-auth/authorize"
    assert config["token_endpoint"] == "http://calipso.test/dev-auth/token"
    assert "S256" in config["code_challenge_methods_supported"]


async def test_a_code_flow_gives_a_token_the_api_takes_once(web: httpx.AsyncClient, signing_app: FastAPI) -> None:
    system = {"Authorization": "Bearer " + signing_app.state.dev_issuer.token("t", "system/*.cruds", "calipso")}
    created = await web.post("/fhir/Practitioner", json={"resourceType": "Practitioner", "name": [{"family": "Petit", "given": ["Claire"]}]},
                             headers={**system, "Content-Type": "application/fhir+json"})
    practitioner = f"Practitioner/{created.json()['id']}"
    verifier, challenge = pkce()
    params = authorize_params(challenge)

    page = await web.get("/dev-auth/authorize", params=params)
    assert page.status_code == 200 and "Claire PETIT" in page.text and "Connexion de développement" in page.text
    chosen = await web.post("/dev-auth/authorize", data={**params, "identity": practitioner}, follow_redirects=False)
    assert chosen.status_code == 303
    target = urlsplit(chosen.headers["location"])
    answer = {k: v[0] for k, v in parse_qs(target.query).items()}
    assert f"{target.scheme}://{target.netloc}{target.path}" == REDIRECT and answer["state"] == "xyz"

    form = {"grant_type": "authorization_code", "code": answer["code"], "redirect_uri": REDIRECT, "code_verifier": verifier,
            "client_id": "calipso-carnet"}
    issued = await web.post("/dev-auth/token", data=form)
    assert issued.status_code == 200 and issued.headers["cache-control"] == "no-store"
    tokens = issued.json()
    assert tokens["token_type"] == "Bearer" and "user/" in tokens["scope"]
    claims = orjson.loads(base64.urlsafe_b64decode(tokens["id_token"].split(".")[1] + "=="))
    assert claims["fhirUser"].endswith(practitioner) and claims["aud"] == "calipso-carnet"
    me = await web.get(f"/fhir/{practitioner}", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200

    again = await web.post("/dev-auth/token", data=form)  # a code is used once
    assert again.status_code == 400 and again.json() == {"error": "invalid_grant"}


async def test_a_code_needs_its_own_verifier_and_redirect(web: httpx.AsyncClient) -> None:
    verifier, challenge = pkce()
    params = authorize_params(challenge)
    for changes in ({"code_verifier": "not-the-verifier"}, {"redirect_uri": "http://calipso.test/elsewhere/"}):
        chosen = await web.post("/dev-auth/authorize", data={**params, "identity": "Patient/p1"}, follow_redirects=False)
        code = parse_qs(urlsplit(chosen.headers["location"]).query)["code"][0]
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier, **changes}
        refused = await web.post("/dev-auth/token", data=form)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("changes", [
    {"code_challenge_method": "plain"},
    {"code_challenge": ""},
    {"response_type": "token"},
    {"redirect_uri": "https://attacker.example/steal"},
    {"redirect_uri": "javascript:alert(1)"},
])
async def test_the_sign_in_refuses_what_it_does_not_serve(web: httpx.AsyncClient, changes: dict[str, str]) -> None:
    _, challenge = pkce()
    params = authorize_params(challenge, **changes)
    assert (await web.get("/dev-auth/authorize", params=params)).status_code == 400
    assert (await web.post("/dev-auth/authorize", data={**params, "identity": "Patient/p1"}, follow_redirects=False)).status_code == 400


async def test_the_sign_in_page_escapes_what_it_shows(web: httpx.AsyncClient) -> None:
    _, challenge = pkce()
    page = await web.get("/dev-auth/authorize", params=authorize_params(challenge, state='"><script>alert(1)</script>'))
    assert page.status_code == 200 and "<script>alert(1)" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_an_expired_code_is_refused(tmp_path: Path) -> None:
    now = [1_000_000.0]
    sign_in = DevSignIn(DevIssuer(tmp_path), "calipso", clock=lambda: now[0])
    verifier, challenge = pkce()
    location = sign_in.grant(authorize_params(challenge), "Patient/p1")
    code = parse_qs(urlsplit(location).query)["code"][0]
    now[0] += 61
    from fhir_server.security.dev_sign_in import OAuthError

    with pytest.raises(OAuthError, match="invalid_grant"):
        sign_in.exchange({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier},
                         "http://calipso.test/fhir")


async def test_without_the_dev_issuer_there_is_no_sign_in(app: FastAPI) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://calipso.test") as http:
        assert (await http.get("/dev-auth/authorize")).status_code == 404
        assert (await http.post("/dev-auth/token", data={"grant_type": "authorization_code"})).status_code == 404
        assert (await http.get("/app/")).status_code == 200  # the app itself is there (it signs in elsewhere)


# -- calipso demo ---------------------------------------------------------------------------------


def test_the_demo_makes_a_discharged_patients_notebook(demo_server: DemoServer) -> None:
    assert "11 entries, 11 read receipts" in demo_server.output
    patient = demo_server.reference("patient")
    teams = demo_server.matches(f"CareTeam?subject={patient}&status=active")
    members = {p["member"].get("display") for p in teams[0]["participant"]}
    assert {"Claire PETIT", "Antoine ROUX", "Sophie GIRARD", "Isabelle LEFEBVRE"} <= members
    entries = demo_server.matches(f"Communication?subject={patient}&category:not=https://fhir.hopitauxchampagnesud.fr/calipso/"
                                  "CodeSystem/entry-kind|ack&_count=100")
    kinds = {c["code"] for e in entries for c in e["category"][0]["coding"]}
    assert "discharge-info" in kinds and "alert" in kinds
    assert demo_server.matches(f"CarePlan?subject={patient}&status=active")


def test_the_demo_run_twice_adds_nothing(demo_server: DemoServer) -> None:
    patient = demo_server.reference("patient")
    before = demo_server.search(f"Communication?subject={patient}&_summary=count")["total"]
    demo_server.run_demo()
    assert demo_server.search(f"Communication?subject={patient}&_summary=count")["total"] == before


def test_the_demo_entry_hidden_from_the_patient_is_hidden_from_the_patient(demo_server: DemoServer) -> None:
    patient = demo_server.reference("patient")
    as_patient = demo_server.served.token("--sub", patient, "--scope", "patient/*.rs", "--fhir-user", patient,
                                          "--patient", patient.split("/")[1])
    as_nurse = demo_server.served.token("--sub", "nurse", "--scope", "user/*.rs", "--fhir-user", demo_server.reference("nurse"))
    texts = lambda token: " ".join(p.get("contentString", "") for e in demo_server.matches(  # noqa: E731
        f"Communication?subject={patient}&_count=100", token) for p in e.get("payload", []))
    assert "Pronostic" in texts(as_nurse)
    assert "Pronostic" not in texts(as_patient)
