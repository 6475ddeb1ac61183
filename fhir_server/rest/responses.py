"""FHIR responses built from bytes: the stored JSON is served as it is (or as FHIR XML when the
client asked for it: xml_format.py)."""

from __future__ import annotations

from email.utils import format_datetime
from typing import Any

import orjson
from starlette.responses import Response

from fhir_server.outcome import Issue, operation_outcome
from fhir_server.rest.negotiation import CONTENT_TYPE, XML_CONTENT_TYPE, Rendering
from fhir_server.spec import load_spec
from fhir_server.xml_format import XmlFormat
from fhir_server.storage.store import Version


def render(body: bytes | dict[str, Any], rendering: Rendering) -> bytes:
    """Serialise (or re-indent) a body; stored bytes pass through untouched unless _pretty or XML."""
    if rendering.xml:
        return XmlFormat(load_spec()).to_xml(orjson.loads(body) if isinstance(body, (bytes, bytearray)) else body)
    if isinstance(body, (bytes, bytearray)):
        return orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2) if rendering.pretty else bytes(body)
    return orjson.dumps(body, option=orjson.OPT_INDENT_2 if rendering.pretty else 0)


def fhir_response(
    body: bytes | dict[str, Any] | None,
    status: int = 200,
    headers: dict[str, str] | None = None,
    rendering: Rendering = Rendering(),
) -> Response:
    """A response with the FHIR JSON media type (no body for 204/304 or when None)."""
    if body is None:
        return Response(status_code=status, headers=headers)
    media_type = XML_CONTENT_TYPE if rendering.xml else CONTENT_TYPE
    return Response(render(body, rendering), status_code=status, headers=headers, media_type=media_type)


def outcome_response(
    status: int, issues: list[Issue], headers: dict[str, str] | None = None, rendering: Rendering = Rendering()
) -> Response:
    return fhir_response(operation_outcome(issues), status, headers, rendering)


def etag(version: int) -> str:
    return f'W/"{version}"'


def http_date(version: Version) -> str:
    return format_datetime(version.updated, usegmt=True)


def version_headers(version: Version) -> dict[str, str]:
    """ETag and Last-Modified of a stored version."""
    return {"ETag": etag(version.version), "Last-Modified": http_date(version)}


__all__ = ["etag", "fhir_response", "http_date", "outcome_response", "render", "version_headers"]
