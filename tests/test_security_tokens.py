"""Bearer tokens against a remote issuer's JWKS (respx plays the issuer): claims checks, key
rotation, outages; and the SMART scopes read into grants."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_server.security.scopes import Grant
from fhir_server.security.tokens import InvalidToken, KeysUnavailable, RemoteJwks, TokenVerifier

ISSUER = "https://auth.hopitaux-champagne-sud.example/realms/calipso"
JWKS_URL = f"{ISSUER}/protocol/openid-connect/certs"
AUDIENCE = "https://calipso.example/fhir"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rsa_key(kid: str) -> tuple[Any, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    return private, {**public, "kid": kid, "use": "sig", "alg": "RS256"}


def ec_key(kid: str) -> tuple[Any, dict[str, Any]]:
    private = ec.generate_private_key(ec.SECP256R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    return private, {**public, "kid": kid, "use": "sig", "alg": "ES256"}


def sign(private: Any, kid: str, algorithm: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "sub": "u1", "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 300,
               "scope": "user/*.read", "fhirUser": "https://calipso.example/fhir/Practitioner/gp", **claims}
    return jwt.encode(payload, private, algorithm=algorithm, headers={"kid": kid})


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[Any, dict[str, Any]]]:
    return {"a": rsa_key("a"), "b": rsa_key("b"), "e": ec_key("e")}


def verifier(clock: Clock, leeway: float = 60) -> TokenVerifier:
    return TokenVerifier({ISSUER: RemoteJwks(JWKS_URL, httpx.AsyncClient(), min_refresh=10, clock=clock)}, AUDIENCE, leeway)


@respx.mock
async def test_valid_rs256_and_es256_tokens_give_their_claims(keys: dict[str, Any]) -> None:
    respx.get(JWKS_URL).respond(json={"keys": [keys["a"][1], keys["e"][1]]})
    check = verifier(Clock())
    claims = await check.verify(sign(keys["a"][0], "a", patient="helene"))
    assert claims.subject == "u1" and claims.fhir_user == "Practitioner/gp" and claims.patient == "helene"
    assert (await check.verify(sign(keys["e"][0], "e", "ES256"))).scope == "user/*.read"


@respx.mock
@pytest.mark.parametrize(("claims", "reason"), [
    ({"exp": int(time.time()) - 120}, "expired"),
    ({"nbf": int(time.time()) + 600}, "not valid yet"),
    ({"aud": "https://other.example/fhir"}, "another audience"),
    ({"iss": "https://evil.example"}, "issuer is not trusted"),
    ({"sub": None}, "invalid"),
])
async def test_claims_are_checked(keys: dict[str, Any], claims: dict[str, Any], reason: str) -> None:
    respx.get(JWKS_URL).respond(json={"keys": [keys["a"][1]]})
    check = verifier(Clock())
    token = sign(keys["a"][0], "a", **{k: v for k, v in claims.items() if v is not None})
    if claims.get("sub", "") is None:
        token = jwt.encode({k: v for k, v in jwt.decode(token, options={"verify_signature": False}).items() if k != "sub"},
                           keys["a"][0], algorithm="RS256", headers={"kid": "a"})
    with pytest.raises(InvalidToken, match=reason):
        await check.verify(token)


@respx.mock
async def test_clock_skew_within_the_leeway_is_accepted(keys: dict[str, Any]) -> None:
    respx.get(JWKS_URL).respond(json={"keys": [keys["a"][1]]})
    check = verifier(Clock(), leeway=60)
    await check.verify(sign(keys["a"][0], "a", exp=int(time.time()) - 30, nbf=int(time.time()) + 30))


@respx.mock
async def test_a_forged_signature_or_algorithm_is_refused(keys: dict[str, Any]) -> None:
    respx.get(JWKS_URL).respond(json={"keys": [keys["a"][1]]})
    check = verifier(Clock())
    with pytest.raises(InvalidToken, match="signature"):
        await check.verify(sign(keys["b"][0], "a"))  # another key claiming kid "a"
    hs256 = jwt.encode({"iss": ISSUER, "sub": "x", "aud": AUDIENCE, "exp": int(time.time()) + 60}, "k" * 32, algorithm="HS256")
    with pytest.raises(InvalidToken, match="algorithm"):
        await check.verify(hs256)
    unsigned = jwt.encode({"iss": ISSUER, "sub": "x", "aud": AUDIENCE, "exp": int(time.time()) + 60}, None, algorithm="none")
    with pytest.raises(InvalidToken, match="algorithm"):
        await check.verify(unsigned)


@respx.mock
async def test_key_rotation(keys: dict[str, Any]) -> None:
    clock = Clock()
    route = respx.get(JWKS_URL)
    route.respond(json={"keys": [keys["a"][1]]}, headers={"Cache-Control": "max-age=600"})
    check = verifier(clock)
    await check.verify(sign(keys["a"][0], "a"))
    assert route.call_count == 1
    # the issuer starts signing with b: one refetch finds it...
    route.respond(json={"keys": [keys["a"][1], keys["b"][1]]}, headers={"Cache-Control": "max-age=600"})
    clock.now += 11
    await check.verify(sign(keys["b"][0], "b"))
    assert route.call_count == 2
    # ... but unknown kids cannot make us refetch more than once per min_refresh
    clock.now += 11
    for _ in range(5):
        with pytest.raises(InvalidToken, match="does not publish"):
            await check.verify(sign(keys["e"][0], "zzz", "ES256"))
    assert route.call_count == 3
    # a retired key stops working once the cached set expires
    route.respond(json={"keys": [keys["b"][1]]}, headers={"Cache-Control": "max-age=600"})
    await check.verify(sign(keys["a"][0], "a"))  # still cached
    clock.now += 601
    with pytest.raises(InvalidToken, match="does not publish"):
        await check.verify(sign(keys["a"][0], "a"))
    await check.verify(sign(keys["b"][0], "b"))


@respx.mock
async def test_an_outage_keeps_the_cached_keys(keys: dict[str, Any]) -> None:
    clock = Clock()
    route = respx.get(JWKS_URL)
    route.respond(json={"keys": [keys["a"][1]]}, headers={"Cache-Control": "max-age=60"})
    check = verifier(clock)
    await check.verify(sign(keys["a"][0], "a"))
    route.side_effect = httpx.ConnectError("issuer down")
    clock.now += 120  # expired: a refresh is attempted and fails
    await check.verify(sign(keys["a"][0], "a"))
    route.side_effect = None
    route.respond(status_code=503)
    clock.now += 120
    await check.verify(sign(keys["a"][0], "a"))


@respx.mock
async def test_no_keys_at_all_is_unavailable_not_invalid(keys: dict[str, Any]) -> None:
    respx.get(JWKS_URL).mock(side_effect=httpx.ConnectError("issuer down"))
    check = verifier(Clock())
    with pytest.raises(KeysUnavailable):
        await check.verify(sign(keys["a"][0], "a"))
    respx.get(JWKS_URL).respond(200, content=b"<html>not json</html>")
    clock = Clock()
    check = verifier(clock)
    with pytest.raises(KeysUnavailable):
        await check.verify(sign(keys["a"][0], "a"))


def test_scopes_v1_and_v2() -> None:
    grant = Grant.parse("openid fhirUser patient/*.read user/Communication.write system/Patient.cruds user/CarePlan.rs")
    assert grant.allows("patient", "Observation", "r") and grant.allows("patient", "Observation", "s")
    assert not grant.allows("patient", "Observation", "c")
    assert all(grant.allows("user", "Communication", letter) for letter in "cud")
    assert not grant.allows("user", "Communication", "r")
    assert all(grant.allows("system", "Patient", letter) for letter in "cruds") and not grant.allows("system", "Encounter", "r")
    assert grant.allows("user", "CarePlan", "s") and not grant.allows("user", "CarePlan", "u")
    assert grant.contexts() == {"patient", "user", "system"}


def test_malformed_or_restricted_scopes_grant_nothing() -> None:
    grant = Grant.parse("patient/Communication.rsc user/*.dance admin/*.* patient/Communication.rs?category=alert user/*.*")
    assert not grant.allows("patient", "Communication", "r")  # letters out of cruds order, and a restricted scope
    assert grant.allows("user", "Observation", "d")  # user/*.* is v1 for everything
    assert set(grant.ignored) == {"patient/Communication.rsc", "user/*.dance", "admin/*.*", "patient/Communication.rs?category=alert"}


def test_serve_refuses_unsafe_authentication_settings(tmp_path) -> None:
    """`--auth off` only on loopback; `--auth on` only with a trusted issuer. Refused before
    anything starts (no database), with a message saying what to do."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CALIPSO_")}
    command = [sys.executable, "-m", "fhir_server.cli", "serve", "--data-dir", str(tmp_path), "--port", "0"]
    open_host = subprocess.run([*command, "--auth", "off", "--host", "0.0.0.0"], capture_output=True, text=True, env=env, timeout=60)
    assert open_host.returncode == 2 and "non-loopback" in open_host.stderr
    no_issuer = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert no_issuer.returncode == 2 and "CALIPSO_AUTH_JWKS_URL" in no_issuer.stderr and "--dev-issuer" in no_issuer.stderr


def test_calipso_token_prints_a_token_the_dev_issuer_signed(tmp_path) -> None:
    import asyncio
    import subprocess
    import sys

    from fhir_server.security.dev_issuer import ISSUER, DevIssuer
    from fhir_server.security.tokens import StaticKeys

    done = subprocess.run([sys.executable, "-m", "fhir_server.cli", "token", "--data-dir", str(tmp_path), "--sub", "gp",
                           "--scope", "user/*.rs", "--fhir-user", "Practitioner/gp", "--patient", "helene"],
                          capture_output=True, text=True, timeout=60, check=True)
    token = done.stdout.strip().splitlines()[-1]
    check = TokenVerifier({ISSUER: StaticKeys(DevIssuer(tmp_path).jwks())}, "calipso")
    claims = asyncio.run(check.verify(token))
    assert (claims.subject, claims.fhir_user, claims.patient, claims.scope) == ("gp", "Practitioner/gp", "helene", "user/*.rs")
    assert oct((tmp_path / "dev-issuer-key.pem").stat().st_mode & 0o777) == "0o600"
