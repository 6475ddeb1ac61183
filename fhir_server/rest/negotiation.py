"""Content negotiation: FHIR JSON or FHIR XML, in and out (`_format`, `Accept`, `Content-Type`);
other formats are refused clearly (406 / 415)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from fhir_server.outcome import FhirError

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
CONTENT_TYPE = "application/fhir+json; charset=utf-8"
XML_CONTENT_TYPE = "application/fhir+xml; charset=utf-8"
XML_FORMATS = frozenset({"xml", "text/xml", "application/xml", "application/fhir+xml", "application/xml+fhir"})
XML_MEDIA = frozenset({"application/fhir+xml", "application/xml", "text/xml", "application/xml+fhir"})

JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json", "application/json+fhir"})
JSON_MEDIA = frozenset({"application/fhir+json", "application/json", "application/json+fhir", "application/*", "*/*"})
XML_MEDIA_HINT = "xml"
R4_VERSIONS = frozenset({"4.0", "4.0.0", "4.0.1"})  # the FHIR mime-type parameter names the major.minor version


@dataclass(frozen=True, slots=True)
class Rendering:
    """How to write the response body."""

    pretty: bool = False
    xml: bool = False  # FHIR XML instead of JSON


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


FORMAT_PARAMETERS = frozenset({"_format", "_pretty"})  # how to answer, not what: no interaction takes them as criteria


def negotiate(request: Request) -> Rendering:
    """Check `_format` and `Accept`; 406 when the client wants a format we do not serve."""
    params = request.query_params
    requested = params.get("_format")
    xml = False
    if requested is not None:
        asked = requested.strip().lower().split(";", 1)[0]
        if asked not in JSON_FORMATS and asked not in XML_FORMATS:
            raise FhirError.of(406, "not-supported", f"_format={requested[:40]!r} is not served: json or xml")
        xml = asked in XML_FORMATS
    else:
        accept = request.headers.get("accept")
        if accept:
            media = _media_types(accept)
            json_ok = [m for m in media if m in JSON_MEDIA or m.endswith("+json")]
            xml_ok = [m for m in media if m in XML_MEDIA]
            if media and not json_ok and not xml_ok:
                raise FhirError.of(406, "not-supported", f"Only {FHIR_JSON} and {FHIR_XML} are served")
            xml = bool(xml_ok) and (not json_ok or media.index(xml_ok[0]) < media.index(json_ok[0]))
            if (version := _other_fhir_version(accept)) is not None:
                raise FhirError.of(406, "not-supported", f"fhirVersion={version!r} is not served: this server speaks FHIR R4 (4.0)")
    return Rendering(pretty=params.get("_pretty", "").lower() == "true", xml=xml)


def preferred(request: Request) -> Rendering:
    """The rendering a client asked for, for an error answer: never raises (a refused format
    gets JSON)."""
    try:
        return negotiate(request)
    except FhirError:
        return Rendering()


def body_is_xml(request: Request) -> bool:
    """Whether the body is FHIR XML (False: JSON, also when no Content-Type is given); 415 for
    any other body."""
    content_type = request.headers.get("content-type")
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    if (version := _other_fhir_version(content_type)) is not None:
        raise FhirError.of(415, "not-supported", f"A body in FHIR {version!r} is not accepted: this server speaks FHIR R4 (4.0)")
    if media in JSON_MEDIA or media.endswith("+json"):
        return False
    if media in XML_MEDIA:
        return True
    raise FhirError.of(415, "not-supported", f"Content-Type {media[:60]!r} is not accepted: send {FHIR_JSON} or {FHIR_XML}")


__all__ = ["FORMAT_PARAMETERS", "CONTENT_TYPE", "FHIR_JSON", "FHIR_XML", "Rendering", "XML_CONTENT_TYPE", "body_is_xml", "negotiate", "preferred"]
