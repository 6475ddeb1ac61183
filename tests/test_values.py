"""Index keys (fhir_server/values.py): a value that holds the separator cannot pass for two parts."""

from __future__ import annotations

from fhir_server.values import SEPARATOR, key


def test_keys_join_their_parts_and_drop_the_separator_inside_them() -> None:
    assert key("subject", "Patient/1") == f"subject{SEPARATOR}Patient/1"
    assert key("identifier", "", "V") == f"identifier{SEPARATOR}{SEPARATOR}V"
    assert key("identifier", f"sys{SEPARATOR}tem", "V") == f"identifier{SEPARATOR}system{SEPARATOR}V"
    assert key(f"a{SEPARATOR}", "b") != key("a", "", "b")
    assert key("only") == "only"
