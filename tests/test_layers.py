"""The layer picture of docs/architecture.md holds: rest -> engine (and bulk) -> search / validation /
security -> storage, no arrow back up; and MongoDB's operators are written in storage/ only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import project_root

PACKAGE = project_root() / "fhir_server"
# a layer may import the layers listed for it (and itself, and the leaves outside these rooms)
FORBIDDEN = {
    "storage": ("fhir_server.rest", "fhir_server.engine", "fhir_server.search", "fhir_server.security", "fhir_server.validation",
                "fhir_server.bulk"),
    "search": ("fhir_server.rest", "fhir_server.engine", "fhir_server.bulk"),
    "security": ("fhir_server.rest", "fhir_server.engine", "fhir_server.search", "fhir_server.bulk"),
    "validation": ("fhir_server.rest", "fhir_server.engine", "fhir_server.bulk"),
    "engine": ("fhir_server.rest", "fhir_server.bulk"),
    "bulk": ("fhir_server.rest",),  # beside the engine: export jobs read through search, security and storage
}
OPERATOR = re.compile(r"""["']\$(in|nin|and|or|nor|not|regex|gt|gte|lt|lte|ne|eq|exists|elemMatch|set|unset|inc|push|pull|all|size)["']""")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_layer_imports_one_above_it() -> None:
    wrong = []
    for layer, above in FORBIDDEN.items():
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            wrong += [f"{path.relative_to(project_root())} imports {m}" for m in imports_of(path) if m.startswith(above)]
    assert wrong == []


def test_mongodb_operators_are_written_in_storage_only() -> None:
    found = []
    for root in (PACKAGE, project_root() / "hl7v2_bridge"):
        for path in sorted(root.rglob("*.py")):
            if (PACKAGE / "storage") in path.parents:
                continue
            found += [f"{path.relative_to(project_root())}:{n}" for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                      if OPERATOR.search(line)]
    assert found == []
