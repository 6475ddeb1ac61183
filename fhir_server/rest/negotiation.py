"""Content negotiation: JSON in, JSON out; XML is refused clearly (406 / 415)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from fhir_server.outcome import FhirError

FHIR_JSON = "application/fhir+json"
CONTENT_TYPE = "application/fhir+json; charset=utf-8"

JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json", "application/json+fhir"})
JSON_MEDIA = frozenset({"application/fhir+json", "application/json", "application/json+fhir", "application/*", "*/*"})
XML_MEDIA_HINT = "xml"
R4_VERSIONS = frozenset({"4.0", "4.0.0", "4.0.1"})  # the FHIR mime-type parameter names the major.minor version


@dataclass(frozen=True, slots=True)
class Rendering:
    """How to write the response body."""

    pretty: bool = False


def _media_types(header: str) -> list[str]:
    return [part.split(";", 1)[0].strip().lower() for part in header.split(",") if part.strip()]


def _other_fhir_version(header: str) -> str | None:
    """The `fhirVersion` a media type parameter asks for, when it is not R4 (4.0)."""
    for part in header.split(","):
        for parameter in part.split(";")[1:]:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "fhirversion":
                version = value.strip().strip('"')
                if version not in R4_VERSIONS:
                    return version[:20]
    return None


def negotiate(request: Request) -> Rendering:
    """Check `_format` and `Accept`; 406 when the client wants a format we do not serve."""
    params = request.query_params
    requested = params.get("_format")
    if requested is not None:
        if requested.strip().lower().split(";", 1)[0] not in JSON_FORMATS:
            raise FhirError.of(406, "not-supported", f"_format={requested[:40]!r} is not served: only JSON")
    else:
        accept = request.headers.get("accept")
        if accept:
            media = _media_types(accept)
            if media and not any(m in JSON_MEDIA or m.endswith("+json") for m in media):
                raise FhirError.of(406, "not-supported", "Only application/fhir+json is served (XML is not supported)")
            if (version := _other_fhir_version(accept)) is not None:
                raise FhirError.of(406, "not-supported", f"fhirVersion={version!r} is not served: this server speaks FHIR R4 (4.0)")
    return Rendering(pretty=params.get("_pretty", "").lower() == "true")


def check_body_type(request: Request) -> None:
    """415 for a body that is not JSON (a missing Content-Type is read as JSON)."""
    content_type = request.headers.get("content-type")
    if not content_type:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if (version := _other_fhir_version(content_type)) is not None:
        raise FhirError.of(415, "not-supported", f"A body in FHIR {version!r} is not accepted: this server speaks FHIR R4 (4.0)")
    if media in JSON_MEDIA or media.endswith("+json"):
        return
    hint = " (XML is not supported)" if XML_MEDIA_HINT in media else ""
    raise FhirError.of(415, "not-supported", f"Content-Type {media[:60]!r} is not accepted: send {FHIR_JSON}{hint}")


__all__ = ["CONTENT_TYPE", "FHIR_JSON", "Rendering", "check_body_type", "negotiate"]
