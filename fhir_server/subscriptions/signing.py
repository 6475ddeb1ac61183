"""The signature of every notification request: `X-Calipso-Signature: t=<unix seconds>,
v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>`. The receiver recomputes it with the secret
it gave when subscribing and refuses a stale `t` (a replayed request)."""

from __future__ import annotations

import hashlib
import hmac


def signature(secret: str, body: bytes, unix_time: int) -> str:
    mac = hmac.new(secret.encode(), f"{unix_time}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={unix_time},v1={mac}"


def verify(secret: str, body: bytes, header: str, now: int, tolerance: int = 300) -> bool:
    """What a receiver does (the tests and the example receiver use it)."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        unix_time = int(fields.get("t", ""))
    except ValueError:
        return False
    if abs(now - unix_time) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, body, unix_time), header.strip())


__all__ = ["signature", "verify"]
