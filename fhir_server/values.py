"""Search values normalised the same way at write time and at query time."""

from __future__ import annotations

import calendar
import math
import re
import unicodedata
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

ONE_MS = timedelta(milliseconds=1)
EARLIEST = datetime(1, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)
SEPARATOR = "\x1f"  # joins parameter, system and value in index keys; removed from values

DATE_TIME = re.compile(
    r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?P<fraction>\.\d+)?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def fold(text: str) -> str:
    """Case- and accent-insensitive form: `Lefèvre` and `LEFEVRE` both give `lefevre`."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.casefold().split()).replace(SEPARATOR, "")


def clean(text: str) -> str:
    return text.replace(SEPARATOR, "")


def key(*parts: str) -> str:
    """The parts joined by SEPARATOR, which is removed from the parts themselves (a value that
    holds one cannot pass for two parts). One join in the usual case: ~170 keys per write."""
    joined = SEPARATOR.join(parts)
    if joined.count(SEPARATOR) == len(parts) - 1:
        return joined
    return SEPARATOR.join(clean(p) for p in parts)


def instant(text: str) -> datetime | None:
    """An instant or dateTime given as a parameter (`_since`), UTC when it names no zone; None
    when the text is not one."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def date_range(text: str) -> tuple[datetime, datetime] | None:
    """The instants a date/dateTime/instant covers, first and last millisecond (UTC)."""
    match = DATE_TIME.match(text.strip())
    if match is None:
        return None
    try:
        year = int(match["year"])
        zone = match["zone"]
        tz = timezone.utc
        if zone and zone != "Z":
            sign = 1 if zone[0] == "+" else -1
            tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
        if match["month"] is None:
            low = datetime(year, 1, 1, tzinfo=tz)
            high = datetime(year, 12, 31, 23, 59, 59, 999000, tzinfo=tz)
        elif match["day"] is None:
            month = int(match["month"])
            last = calendar.monthrange(year, month)[1]
            low = datetime(year, month, 1, tzinfo=tz)
            high = datetime(year, month, last, 23, 59, 59, 999000, tzinfo=tz)
        elif match["hour"] is None:
            low = datetime(year, int(match["month"]), int(match["day"]), tzinfo=tz)
            high = low + timedelta(days=1) - ONE_MS
        else:
            low = datetime(year, int(match["month"]), int(match["day"]), int(match["hour"]), int(match["minute"]),
                           int(match["second"] or 0), tzinfo=tz)
            if match["second"] is None:
                high = low + timedelta(minutes=1) - ONE_MS
            elif match["fraction"]:
                millis = int((match["fraction"][1:] + "000")[:3])
                low = low + timedelta(milliseconds=millis)
                high = low
            else:
                high = low + timedelta(seconds=1) - ONE_MS
    except ValueError:
        return None
    return low.astimezone(timezone.utc), high.astimezone(timezone.utc)


def number_range(text: str) -> tuple[float, float, float] | None:
    """(value, low, high) of a search number, low/high from its significant figures."""
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5) * Decimal(10) ** (exponent - 1)
    return float(number), float(number - half), float(number + half)


def below(value: float) -> float:
    """The next float above `value`: `<= v` is written `< below(v)` (strict bounds only)."""
    return math.nextafter(value, math.inf)


def before(value: float) -> float:
    """The next float below `value`: `>= v` is written `> before(v)`."""
    return math.nextafter(value, -math.inf)


__all__ = ["EARLIEST", "LATEST", "ONE_MS", "SEPARATOR", "before", "below", "clean", "date_range", "fold", "key", "number_range"]
