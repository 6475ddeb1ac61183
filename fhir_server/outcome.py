"""OperationOutcome issues and the error that carries them out of any layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: severity, IssueType code, human text, FHIRPath location."""

    code: str
    diagnostics: str
    severity: str = "error"
    expression: str | None = None

    def to_json(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = [self.expression]
        return issue


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    """An OperationOutcome resource for these issues (at least one, as R4 requires)."""
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


class FhirError(Exception):
    """A failure the client must see as an HTTP status with an OperationOutcome."""

    def __init__(self, status: int, issues: list[Issue] | Issue, headers: dict[str, str] | None = None):
        self.status = status
        self.issues = issues if isinstance(issues, list) else [issues]
        self.headers = headers or {}
        super().__init__("; ".join(i.diagnostics for i in self.issues))

    @classmethod
    def of(cls, status: int, code: str, diagnostics: str, expression: str | None = None) -> "FhirError":
        """Shorthand for the common one-issue error."""
        return cls(status, Issue(code, diagnostics, expression=expression))


__all__ = ["FhirError", "Issue", "operation_outcome"]
