"""The official R4 JSON Schema, applied to every FHIR body the test suite receives."""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft6Validator

SCHEMA_PATH = Path(__file__).resolve().with_name("fhir.schema.json.gz")


@cache
def _schema() -> dict[str, Any]:
    with gzip.open(SCHEMA_PATH, "rt", encoding="utf-8") as handle:
        return json.load(handle)


@cache
def _validator(resource_type: str) -> Draft6Validator:
    """A validator for one resource type: the schema's own definition, with all its refs."""
    schema = _schema()
    return Draft6Validator({"$ref": f"#/definitions/{resource_type}", "definitions": schema["definitions"]})


def schema_errors(resource: Any) -> list[str]:
    """Every way `resource` breaks the R4 JSON Schema (empty when it conforms)."""
    if not isinstance(resource, dict) or resource.get("resourceType") not in _schema()["definitions"]:
        return [f"not a FHIR resource: {str(resource)[:80]}"]
    errors = _validator(resource["resourceType"]).iter_errors(resource)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in errors]


def assert_conforms(resource: Any) -> None:
    errors = schema_errors(resource)
    assert not errors, "response body breaks the R4 JSON Schema:\n" + "\n".join(errors[:20])
