"""The official R4 JSON Schema check, shared with the conformance harness."""

from conformance.schema import assert_conforms, schema_errors

__all__ = ["assert_conforms", "schema_errors"]
