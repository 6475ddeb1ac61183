"""`calipso validate FILE...`: the server's validator without a server or a database."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, TextIO

import orjson

from fhir_server.ig import load_guide
from fhir_server.outcome import Issue
from fhir_server.spec import load_spec
from fhir_server.validation import Validator

BLOCKING = ("fatal", "error")


def validate_files(paths: list[Path], profile: str | None, out: TextIO) -> int:
    """Validate every resource in `paths` (a Bundle's entries one by one); the exit status."""
    validator = Validator(load_spec(), load_guide())
    status = 0
    for path in paths:
        try:
            resources = list(_resources(orjson.loads(path.read_bytes())))
        except (OSError, orjson.JSONDecodeError) as error:
            print(f"{path}: cannot read: {error}", file=out)
            status = 2
            continue
        for label, resource in resources:
            resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
            issues = validator.validate_all(resource, str(resource_type), profile)
            errors = [i for i in issues if i.severity in BLOCKING]
            print(f"{path}{label}: {'INVALID' if errors else 'OK'} ({len(errors)} errors, {len(issues) - len(errors)} other)", file=out)
            for issue in issues:
                print(f"  {_line(issue)}", file=out)
            if errors and status == 0:
                status = 1
    return status


def _resources(document: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(document, dict) and document.get("resourceType") == "Bundle":
        for index, entry in enumerate(document.get("entry", [])):
            if isinstance(entry, dict) and "resource" in entry:
                yield f" entry[{index}]", entry["resource"]
        return
    yield "", document


def _line(issue: Issue) -> str:
    where = f" at {issue.expression}" if issue.expression else ""
    return f"{issue.severity} {issue.code}{where}: {issue.diagnostics}"


__all__ = ["validate_files"]
