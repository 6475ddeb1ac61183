"""One Settings object, read from the environment and overridden by the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, not {value!r}") from None


@dataclass(frozen=True)
class Settings:
    """Everything configurable about one calipso process."""

    host: str = "127.0.0.1"
    port: int = 8080
    mllp_port: int | None = 2575  # None: no MLLP listener (the HTTP ingest still works)
    data_dir: Path = Path("./data")
    mongodb_uri: str | None = None
    database: str = "calipso"
    max_body_bytes: int = 10 * MIB
    public_base_url: str | None = None
    history_page_size: int = 20
    history_max_page_size: int = 1000
    conditional_delete_multiple: bool = False
    max_bundle_entries: int = 1_000  # one transaction's writes: bench/RESULTS.md, large_body, says why
    max_bundle_bytes: int = 16 * MIB
    enforce_profiles: bool = False
    serve_guide: bool = True  # install profiles/ as readable conformance resources at start
    hl7_default_charset: str = "UNICODE UTF-8"  # when MSH-18 is empty
    mllp_max_message: int = MIB
    mllp_idle_timeout: float = 300.0
    mllp_frame_timeout: float = 30.0  # a frame begun must be whole within this (slow senders cut off)
    mllp_allowed_senders: frozenset[str] = frozenset()
    mllp_tls_cert: Path | None = None
    mllp_tls_key: Path | None = None
    auth: bool = True  # bearer tokens required (SMART on FHIR); off only for a loopback quick start
    auth_audience: str = "calipso"  # the `aud` tokens must carry (in production: the FHIR base URL)
    auth_issuer: str | None = None  # a trusted issuer's `iss` ...
    auth_jwks_url: str | None = None  # ... and where it publishes its keys
    dev_issuer: bool = False  # trust the local issuer whose key is in data_dir (`calipso token`)
    auth_leeway_seconds: int = 60  # clock skew allowed on exp / nbf
    auth_authorize_url: str | None = None  # the authorization server's endpoints, for SMART discovery
    auth_token_url: str | None = None
    cors_origins: tuple[str, ...] = ()  # CORS off unless origins are listed
    rate_limit_per_second: float = 0.0  # per client (token user, else address); 0: no limit
    rate_limit_burst: int = 200
    http_concurrency: int = 8  # FHIR requests working at once (others wait); 0: no limit. Why 8: bench/RESULTS.md, hl7_fairness
    http_head_timeout_seconds: float = 20.0  # a request line and headers must be whole within this (slow-loris cut off)
    request_timeout_seconds: float = 30.0  # reads (GET, HEAD) answer 503 rather than run longer
    audit: bool = True  # an AuditEvent per interaction and per HL7 message (journal in data_dir/audit)
    subscriptions: bool = True  # this API node may dispatch notifications (one node at a time does, by lease)
    subscription_endpoints: tuple[str, ...] = ()  # origins notifications may go to whatever their address (else public https only)
    subscription_max_attempts: int = 16  # failed sends in a row before a subscription goes `error`
    subscription_retry_cap_seconds: float = 600.0  # the longest pause between two attempts
    subscription_lease_seconds: float = 10.0  # how long a silent dispatcher keeps the others waiting
    export_page_size: int = 500  # resources a $export job reads per query (and per checkpoint)
    export_lease_seconds: float = 30.0  # how long a silent export worker keeps its job from the others
    export_retention_seconds: float = 3600.0  # how long a finished export's files stay (the manifest's Expires)
    export_max_per_second: float = 0.0  # a cap on each export's pace (0: none; exports give way to requests anyway)
    export_share_percent: int = 50  # while requests are being served, the share of time an export may take (100: no rests)

    @classmethod
    def from_env(cls, **overrides: Any) -> "Settings":
        """Settings from CALIPSO_* variables, then the given overrides (None = not given)."""
        settings = cls(
            mongodb_uri=os.environ.get("CALIPSO_MONGODB_URI") or None,
            database=os.environ.get("CALIPSO_DATABASE") or "calipso",
            max_body_bytes=_env_int("CALIPSO_MAX_BODY_BYTES", 10 * MIB),
            public_base_url=os.environ.get("CALIPSO_BASE_URL") or None,
            conditional_delete_multiple=os.environ.get("CALIPSO_CONDITIONAL_DELETE_MULTIPLE", "") == "true",
            max_bundle_entries=_env_int("CALIPSO_MAX_BUNDLE_ENTRIES", 1_000),
            max_bundle_bytes=_env_int("CALIPSO_MAX_BUNDLE_BYTES", 16 * MIB),
            enforce_profiles=os.environ.get("CALIPSO_ENFORCE_PROFILES", "") == "true",
            hl7_default_charset=os.environ.get("CALIPSO_HL7_DEFAULT_CHARSET") or "UNICODE UTF-8",
            mllp_max_message=_env_int("CALIPSO_MLLP_MAX_MESSAGE_BYTES", MIB),
            mllp_idle_timeout=float(_env_int("CALIPSO_MLLP_IDLE_TIMEOUT_SECONDS", 300)),
            http_concurrency=_env_int("CALIPSO_HTTP_CONCURRENCY", 8),
            mllp_frame_timeout=float(_env_int("CALIPSO_MLLP_FRAME_TIMEOUT_SECONDS", 30)),
            mllp_allowed_senders=frozenset(s.strip() for s in os.environ.get("CALIPSO_MLLP_ALLOWED_SENDERS", "").split(",") if s.strip()),
            mllp_tls_cert=Path(os.environ["CALIPSO_MLLP_TLS_CERT"]) if os.environ.get("CALIPSO_MLLP_TLS_CERT") else None,
            mllp_tls_key=Path(os.environ["CALIPSO_MLLP_TLS_KEY"]) if os.environ.get("CALIPSO_MLLP_TLS_KEY") else None,
            auth=os.environ.get("CALIPSO_AUTH", "on") != "off",
            auth_audience=os.environ.get("CALIPSO_AUTH_AUDIENCE") or "calipso",
            auth_issuer=os.environ.get("CALIPSO_AUTH_ISSUER") or None,
            auth_jwks_url=os.environ.get("CALIPSO_AUTH_JWKS_URL") or None,
            dev_issuer=os.environ.get("CALIPSO_DEV_ISSUER", "") == "true",
            auth_leeway_seconds=_env_int("CALIPSO_AUTH_LEEWAY_SECONDS", 60),
            auth_authorize_url=os.environ.get("CALIPSO_AUTH_AUTHORIZE_URL") or None,
            auth_token_url=os.environ.get("CALIPSO_AUTH_TOKEN_URL") or None,
            audit=os.environ.get("CALIPSO_AUDIT", "on") != "off",
            rate_limit_per_second=float(os.environ.get("CALIPSO_RATE_LIMIT_PER_SECOND") or 0),
            rate_limit_burst=_env_int("CALIPSO_RATE_LIMIT_BURST", 200),
            request_timeout_seconds=float(os.environ.get("CALIPSO_REQUEST_TIMEOUT_SECONDS") or 30),
            http_head_timeout_seconds=float(os.environ.get("CALIPSO_HTTP_HEAD_TIMEOUT_SECONDS") or 20),
            cors_origins=tuple(o.strip() for o in os.environ.get("CALIPSO_CORS_ORIGINS", "").split(",") if o.strip()),
            subscriptions=os.environ.get("CALIPSO_SUBSCRIPTIONS", "on") != "off",
            subscription_endpoints=tuple(o.strip() for o in os.environ.get("CALIPSO_SUBSCRIPTION_ENDPOINTS", "").split(",") if o.strip()),
            subscription_max_attempts=_env_int("CALIPSO_SUBSCRIPTION_MAX_ATTEMPTS", 16),
            subscription_retry_cap_seconds=float(_env_int("CALIPSO_SUBSCRIPTION_RETRY_CAP_SECONDS", 600)),
            subscription_lease_seconds=float(_env_int("CALIPSO_SUBSCRIPTION_LEASE_SECONDS", 10)),
            export_page_size=max(1, _env_int("CALIPSO_EXPORT_PAGE_SIZE", 500)),
            export_lease_seconds=float(_env_int("CALIPSO_EXPORT_LEASE_SECONDS", 30)),
            export_retention_seconds=float(_env_int("CALIPSO_EXPORT_RETENTION_SECONDS", 3600)),
            export_max_per_second=float(_env_int("CALIPSO_EXPORT_MAX_PER_SECOND", 0)),
            export_share_percent=min(100, max(1, _env_int("CALIPSO_EXPORT_SHARE_PERCENT", 50))),
        )
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


__all__ = ["Settings"]
