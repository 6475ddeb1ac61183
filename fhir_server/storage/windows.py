"""Newest-first pages read through a window of a sort index, sized from the pages served before.

SecantusDB never returns rows in index order: a page of a patient's 20 newest notebook entries
decodes and sorts every entry the patient has (docs/architecture.md). It does walk a range of a
compound index `(type, F, S, _id)`, with `F` pinned by equality and a range on `S`. So a search
driven by one value of `F` and sorted newest first on the date `S` first reads only the rows
whose `S` lies in a window just below its anchor (now for a first page, the cursor's position
for the next ones). The window is as wide as the pages served before for the same shape of
search needed: the 90th percentile of their reach, each page's reach being how far below its
anchor its first row lay (its gap) plus its spacing per row times the rows wanted. The gap is
not scaled with the rows: a patient whose newest entry is a month old needs a window a month
and a page deep, not 21/20 of a month and a page.

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
        self._reach: dict[Hashable, deque[tuple[float, float] | None]] = {}  # (gap, spacing) seconds
        self.served = 0  # pages answered from windows
        self.widened = 0  # of which needed the second window
        self.missed = 0  # pages the windows held too few rows for (the search then ran whole)

    def window(self, shape: Hashable, anchor: datetime, rows: int, after_anchor: bool) -> Window | None:
        """The window likely to hold `rows` rows below `anchor`, or None when none is likely to."""
        seen = self._reach.get(shape)
        if seen is None or len(seen) < MIN_OBSERVATIONS:
            return None
        full = sorted(gap + spacing * (rows - 1) for gap, spacing in filter(None, seen))
        if len(full) < len(seen) * MIN_FULL_SHARE:
            return None
        width = timedelta(seconds=full[min(len(full) - 1, int(len(full) * QUANTILE))])
        return Window(anchor - width, anchor + ONE_MS if after_anchor else None, width)

    def learn(self, shape: Hashable, anchor: datetime, page: list[Any], full: bool) -> None:
        """A page served for this shape: `page` holds its rows' values of the sort field.

        A page that is not full (or that reached rows with no value) says the driving value
        had less than a page in reach of a window. Rows dated after the anchor are in every
        window that reaches the anchor: they add neither to the gap nor to the spacing."""
        last = page[-1] if page else None
        reach = None
        if full and isinstance(last, datetime):
            below = [value for value in page if value <= anchor]
            gap = (anchor - below[0]).total_seconds() if below else 0.0
            spacing = (below[0] - last).total_seconds() / (len(below) - 1) if len(below) > 1 else gap
            reach = (gap, spacing)
        self._reach.setdefault(shape, deque(maxlen=OBSERVATIONS)).append(reach)


__all__ = ["MAX_KEYS", "WINDOWS_PER_PAGE", "Window", "WindowEstimates", "sort_indexes"]
