"""FHIR XML (fhir_server/xml_format.py): JSON → XML → JSON is the identity on the valid
resources the suite carries; the XML follows the definitions' element order; hostile XML is
refused clearly."""

from __future__ import annotations

import glob
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.outcome import FhirError
from fhir_server.spec import load_spec
from fhir_server.xml_format import FHIR_NS, XmlFormat
from tests.conftest import project_root

NOT_R4 = {"json-comments.json", "empty-array.json"}  # fhir_comments and an empty array: JSON XML cannot carry


def corpus() -> list[Path]:
    root = project_root()
    found = []
    for path in sorted([*glob.glob(str(root / "profiles/examples/*.json")), *glob.glob(str(root / "tests/data/**/*.json"), recursive=True)]):
        try:
            resource = orjson.loads(Path(path).read_bytes())
        except orjson.JSONDecodeError:
            continue
        if isinstance(resource, dict) and resource.get("resourceType") in load_spec().resource_types and Path(path).name not in NOT_R4:
            found.append(Path(path))
    return found


@pytest.fixture(scope="module")
def xml() -> XmlFormat:
    return XmlFormat(load_spec())


def test_the_round_trip_is_the_identity_on_the_corpus(xml: XmlFormat) -> None:
    paths = corpus()
    assert len(paths) >= 70
    for path in paths:
        resource = orjson.loads(path.read_bytes())
        assert xml.from_xml(xml.to_xml(resource)) == resource, path.name


def test_elements_follow_the_definitions_order_and_primitives_carry_values(xml: XmlFormat) -> None:
    patient: dict[str, Any] = {"gender": "female", "name": [{"given": ["Hélène", "Marie"], "family": "Lefèvre"}],
                               "_gender": {"extension": [{"url": "http://example.org/x", "valueBoolean": True}]},
                               "active": True, "id": "p1", "resourceType": "Patient",
                               "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Mme &amp; co</p></div>'}}
    document = xml.to_xml(patient)
    root = ET.fromstring(document)
    assert root.tag == f"{{{FHIR_NS}}}Patient"
    assert [child.tag.split("}")[1] for child in root] == ["id", "text", "active", "name", "gender"]
    gender = root.find(f"{{{FHIR_NS}}}gender")
    assert gender is not None and gender.get("value") == "female" and gender.find(f"{{{FHIR_NS}}}extension").get("url") == "http://example.org/x"
    assert b'<family value="Lef\xc3\xa8vre"/>' in document
    assert xml.from_xml(document) == patient


@pytest.mark.parametrize("body, expected", [
    (b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x "xxxxxxxx">]><Patient xmlns="http://hl7.org/fhir"><id value="&x;"/></Patient>',
     "document type"),
    (b'<Patient xmlns="http://hl7.org/fhir"><id value="a"/>', "well-formed"),
    (b'<Patient xmlns="http://hl7.org/fhir"><nonsense value="a"/></Patient>', "not an element of Patient"),
    (b'<Patient><id value="a"/></Patient>', "not a FHIR resource"),
    (b'<Bundle xmlns="http://hl7.org/fhir"><entry><resource><Patient xmlns="http://hl7.org/fhir"/><Patient xmlns="http://hl7.org/fhir"/>'
     b'</resource></entry></Bundle>', "holds one resource"),
])
def test_hostile_or_broken_xml_is_refused(xml: XmlFormat, body: bytes, expected: str) -> None:
    with pytest.raises(FhirError) as refused:
        xml.from_xml(body)
    assert refused.value.status == 400 and expected in refused.value.issues[0].diagnostics


def test_line_breaks_and_tabs_in_values_survive(xml: XmlFormat) -> None:
    """An XML parser turns a raw line break in an attribute into a space: they are written as
    character references."""
    entry = {"resourceType": "Communication", "status": "completed",
             "payload": [{"contentString": "Pansement refait.\nPlaie propre,\r\n\tà revoir jeudi"}]}
    assert xml.from_xml(xml.to_xml(entry)) == entry


def test_deep_nesting_is_refused_not_crashed(xml: XmlFormat) -> None:
    body = b'<Patient xmlns="http://hl7.org/fhir">' + b"<extension url='x'>" * 5000 + b"</extension>" * 5000 + b"</Patient>"
    with pytest.raises(FhirError) as refused:
        xml.from_xml(body)
    assert refused.value.status == 422
