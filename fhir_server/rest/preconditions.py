"""Request headers that steer an interaction: If-Match, If-None-Match, If-Modified-Since, Prefer."""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from starlette.requests import Request

from fhir_server.engine.interactions import parse_etag
from fhir_server.outcome import FhirError
from fhir_server.storage.store import Version
from fhir_server.values import instant

RETURN_PREFERENCES = ("minimal", "representation", "OperationOutcome")


def if_match(request: Request) -> int | None:
    """The version an update is conditioned on; 412 for a tag that names no version of ours."""
    header = request.headers.get("if-match")
    if header is None:
        return None
    version = parse_etag(header)
    if version is None:
        raise FhirError.of(412, "conflict", f"If-Match {header[:40]!r} names no version: use W/\"<versionId>\"")
    return version


def not_modified(request: Request, version: Version) -> bool:
    """True when If-None-Match or If-Modified-Since say the client's copy is current."""
    none_match = request.headers.get("if-none-match")
    if none_match is not None:
        tags = [t.strip() for t in none_match.split(",")]
        return any(t == "*" or parse_etag(t) == version.version for t in tags)
    modified_since = request.headers.get("if-modified-since")
    if modified_since is not None:
        try:
            since = parsedate_to_datetime(modified_since)
        except (TypeError, ValueError):
            return False  # an unreadable date is ignored, as HTTP says
        if since.tzinfo is None:
            since = since.replace(tzinfo=timezone.utc)
        return version.updated.replace(microsecond=0) <= since
    return False


def preferences(request: Request) -> set[str]:
    """The `Prefer` header's preferences (RFC 7240), each `name` or `name=value`: names in lower
    case, values unquoted; several headers, commas and semicolons alike."""
    found = set()
    for header in request.headers.getlist("prefer"):
        for part in header.replace(";", ",").split(","):
            name, equals, value = part.strip().partition("=")
            if name.strip():
                found.add(name.strip().lower() + (f"={value.strip().strip(chr(34))}" if equals else ""))
    return found


def return_preference(request: Request) -> str:
    """The `Prefer: return=` the client asked for (representation by default)."""
    asked = preferences(request)
    return next((value for value in RETURN_PREFERENCES if f"return={value}" in asked), "representation")


def strict_handling(request: Request) -> bool:
    """`Prefer: handling=strict`: unknown search parameters are errors, not ignored."""
    return "handling=strict" in preferences(request)


def parse_instant(value: str, parameter: str) -> datetime:
    """An instant or dateTime parameter (`_since`); 400 when it is not one."""
    moment = instant(value)
    if moment is None:
        raise FhirError.of(400, "invalid", f"{parameter} must be an instant such as 2026-01-31T08:00:00Z")
    return moment


__all__ = ["if_match", "not_modified", "parse_instant", "preferences", "return_preference", "strict_handling"]
