"""The Backport IG's R4 notification profiles (transcribed in backport/, see its NOTICE), for
checking what calipso sends: the tests and the conformance harness validate notifications with
them."""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir_server.ig import load_guide
from fhir_server.outcome import Issue
from fhir_server.subscriptions.vocabulary import BACKPORT, BACKPORT_DIR
from fhir_server.validation.profile import ProfileValidator

@cache
def _validator() -> ProfileValidator:
    return ProfileValidator(load_guide(BACKPORT_DIR))


def notification_issues(bundle: dict[str, Any]) -> list[Issue]:
    """Errors of a notification Bundle against BackportSubscriptionNotificationR4 (and, through
    its first entry, BackportSubscriptionStatusR4)."""
    return [i for i in _validator().validate(bundle, BACKPORT["notificationProfile"]) if i.severity in ("error", "fatal")]


def status_issues(parameters: dict[str, Any]) -> list[Issue]:
    """Errors of a SubscriptionStatus Parameters ($status answers) against BackportSubscriptionStatusR4."""
    return [i for i in _validator().validate(parameters, BACKPORT["statusProfile"]) if i.severity in ("error", "fatal")]


__all__ = ["notification_issues", "status_issues"]
