"""Newest-first pages read through a window of a sort index, sized from the pages served before.

SecantusDB never returns rows in index order: a page of a patient's 20 newest notebook entries
decodes and sorts every entry the patient has (docs/architecture.md). It does walk a range of a
compound index `(type, F, S, _id)`, with `F` pinned by equality and a range on `S`. So a search
driven by one value of `F` and sorted newest first on the date `S` first reads only the rows
whose `S` lies in a window just below its anchor (now for a first page, the cursor's position
for the next ones). The window is as wide as the pages served before for the same shape of
search needed: the 90th percentile of their reach per row, times the rows wanted.

A window that holds more rows than the page is exact: every row outside it sorts after every
row inside it. When it holds fewer, the next window down, twice as wide, is read as well; when
both together still hold too few, the search runs as it would have without them. The estimates
change how much is read, never what is returned.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Hashable

OBSERVATIONS = 64  # the recent pages each shape of search remembers
MIN_OBSERVATIONS = 8  # before this many, no window: nothing to size it from
QUANTILE = 0.9  # of the reach per row: a window wide enough for nine pages in ten
MIN_FULL_SHARE = 0.5  # below this share of full pages, most windows would miss: do not try
MAX_KEYS = 4  # one range read per driving value (`subject=id` names Patient/id and Group/id)
WINDOWS_PER_PAGE = 2  # then the whole search: rows with no value of the sort field are in no window
ONE_MS = timedelta(milliseconds=1)  # dates are stored to the millisecond: `< t + 1 ms` is `<= t`


def sort_indexes(indexes: list[tuple[list[tuple[str, int]], dict[str, Any]]]) -> dict[str, str]:
    """{driving field: sort field} for the indexes shaped `(type, F, so.S, ...)`."""
    found = {}
    for fields, _options in indexes:
        names = [name for name, _ in fields]
        if len(names) >= 3 and names[0] == "type" and names[2].startswith("so."):
            found[names[1]] = names[2]
    return found


@dataclass(frozen=True, slots=True)
class Window:
    """The range of the sort field to read: `lower < S < upper` (upper None: no end)."""

    lower: datetime
    upper: datetime | None
    width: timedelta

    def condition(self) -> dict[str, Any]:
        # exclusive bounds only: SecantusDB drops the rows equal to an inclusive end bound
        return {"$gt": self.lower} if self.upper is None else {"$gt": self.lower, "$lt": self.upper}

    def below(self) -> Window:
        """The next window down, twice as wide, starting at this one's lower bound (included)."""
        return Window(self.lower - 2 * self.width, self.lower + ONE_MS, 2 * self.width)


class WindowEstimates:
    """What the pages served so far tell about how far back a page reaches, per search shape."""

    def __init__(self) -> None:
        self._reach: dict[Hashable, deque[float | None]] = {}
        self.served = 0  # pages answered from windows
        self.widened = 0  # of which needed the second window
        self.missed = 0  # pages the windows held too few rows for (the search then ran whole)

    def window(self, shape: Hashable, anchor: datetime, rows: int, after_anchor: bool) -> Window | None:
        """The window likely to hold `rows` rows below `anchor`, or None when none is likely to."""
        seen = self._reach.get(shape)
        if seen is None or len(seen) < MIN_OBSERVATIONS:
            return None
        full = sorted(reach for reach in seen if reach is not None)
        if len(full) < len(seen) * MIN_FULL_SHARE:
            return None
        per_row = full[min(len(full) - 1, int(len(full) * QUANTILE))]
        width = timedelta(seconds=per_row * rows)
        return Window(anchor - width, anchor + ONE_MS if after_anchor else None, width)

    def learn(self, shape: Hashable, anchor: datetime, page: list[Any], full: bool) -> None:
        """A page served for this shape: `page` holds its rows' values of the sort field.

        A page that is not full (or that reached rows with no value) says the driving value
        had less than a page in reach of a window."""
        last = page[-1] if page else None
        reach = max(0.0, (anchor - last).total_seconds()) / len(page) if full and isinstance(last, datetime) else None
        self._reach.setdefault(shape, deque(maxlen=OBSERVATIONS)).append(reach)


__all__ = ["MAX_KEYS", "WINDOWS_PER_PAGE", "Window", "WindowEstimates", "sort_indexes"]
