"""The engine: the one write path and the read path (rest/ and the bridge call it)."""

from fhir_server.engine.history import HistoryPage, read_history
from fhir_server.engine.interactions import Engine, Outcome, fhir_instant, parse_version, utc_now

__all__ = ["Engine", "HistoryPage", "Outcome", "fhir_instant", "parse_version", "read_history", "utc_now"]
