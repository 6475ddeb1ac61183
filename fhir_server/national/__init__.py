"""The French national layer's data: the ANS guides' definitions calipso checks against or
searches with (cdl/: Cahier de liaison, cds/: Cercle de soins; see each folder's NOTICE), and
the Cahier de liaison view of the notebook (cdl_view.py)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson

NATIONAL_DIR = Path(__file__).resolve().parent


@cache
def national_search_parameters() -> tuple[dict[str, Any], ...]:
    """The guides' SearchParameters (the Cercle de soins' CareTeam dates and organisation),
    added to R4's and our guide's."""
    return tuple(orjson.loads(path.read_bytes()) for path in sorted(NATIONAL_DIR.glob("*/SearchParameter-*.json")))


__all__ = ["NATIONAL_DIR", "national_search_parameters"]
