"""A local token issuer for trying calipso and for tests: an ES256 key kept in the data
directory, its public half served as a JWKS, and tokens signed with it (`calipso token`).
Never for production: anyone who can read the data directory can mint any token."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER = "urn:calipso:dev-issuer"
KEY_FILE = "dev-issuer-key.pem"
DEFAULT_LIFETIME = 3600


class DevIssuer:
    """The key pair in `data_dir` (made on first use, readable by its owner only)."""

    def __init__(self, data_dir: Path):
        path = Path(data_dir) / KEY_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(pem)
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path} does not hold an EC private key (the dev issuer signs ES256)")
        self._private = private
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self._private.public_key()))
        self.kid = jwt.PyJWK(public, "ES256").key_id or _thumbprint(public)
        self._public = {**public, "kid": self.kid, "use": "sig", "alg": "ES256"}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self._public]}

    def token(self, subject: str, scope: str, audience: str, patient: str | None = None, fhir_user: str | None = None,
              lifetime: int = DEFAULT_LIFETIME, now: float | None = None, **extra: Any) -> str:
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {"iss": ISSUER, "sub": subject, "aud": audience, "iat": issued, "nbf": issued,
                                  "exp": issued + lifetime, "jti": uuid.uuid4().hex, "scope": scope, **extra}
        if patient:
            claims["patient"] = patient
        if fhir_user:
            claims["fhirUser"] = fhir_user
        return jwt.encode(claims, self._private, algorithm="ES256", headers={"kid": self.kid})


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint of an EC key (the kid)."""
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


__all__ = ["ISSUER", "DevIssuer"]
