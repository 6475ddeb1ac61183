"""ER7 (pipe-and-hat) messages as small value objects: tolerant reading, strict writing.

Reading: bytes -> text with the charset MSH-18 declares (a UTF-8 BOM is dropped), segments
ended by CR, LF or CRLF, separators from MSH-1/MSH-2, escapes (`\\F\\ \\S\\ \\T\\ \\R\\ \\E\\
\\X..\\ \\.br\\`) decoded when a value is read. Nothing is split beyond what is asked for:
`message.value("PID-3[2].4.2")` walks one field.

Writing (`escape`, `Segment.render`) is strict: the standard separators, everything escaped.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

BOM = codecs.BOM_UTF8
SEGMENT_ENDS = re.compile(r"\r\n|\r|\n")
SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")
# MSH-18 -> Python codec. An empty MSH-18 means the configured default.
CHARSETS = {
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
}
PATH = re.compile(r"^(?P<segment>[A-Z][A-Z0-9]{2})-(?P<field>\d+)(?:\[(?P<repetition>\d+)\])?(?:\.(?P<component>\d+))?(?:\.(?P<sub>\d+))?$")


class Er7Error(ValueError):
    """The bytes are not a readable HL7 v2 message; `code` is the HL7 table 0357 error code."""

    def __init__(self, code: str, text: str, location: str = ""):
        super().__init__(text)
        self.code = code
        self.text = text
        self.location = location


@dataclass(frozen=True)
class Separators:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def encoding_characters(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent


STANDARD = Separators()


@dataclass(frozen=True)
class Segment:
    """One segment: its name and its fields as raw (still escaped) text."""

    name: str
    fields: tuple[str, ...]  # fields[n] is SEG-n (MSH-1 is the field separator itself)
    separators: Separators

    def raw(self, number: int) -> str:
        return self.fields[number] if 0 < number < len(self.fields) else ""

    def repetitions(self, number: int) -> list[str]:
        """The raw repetitions of a field (MSH-2 never repeats: it holds the separators)."""
        raw = self.raw(number)
        if not raw:
            return []
        if self.name == "MSH" and number in (1, 2):
            return [raw]
        return _split(raw, self.separators.repetition)

    def value(self, number: int, repetition: int = 1, component: int = 1, subcomponent: int = 1) -> str:
        """One decoded leaf value; "" when absent."""
        repetitions = self.repetitions(number)
        if self.name == "MSH" and number in (1, 2):
            return repetitions[0] if repetitions else ""
        if not 0 < repetition <= len(repetitions):
            return ""
        return leaf(repetitions[repetition - 1], component, subcomponent, self.separators)


@lru_cache(maxsize=65536)
def _split(text: str, separator: str) -> list[str]:
    """Splits are cached: mapping one message reads the same fields many times."""
    return text.split(separator)


def leaf(repetition: str, component: int, subcomponent: int, separators: Separators) -> str:
    """Component `component`, subcomponent `subcomponent` of one repetition, unescaped."""
    components = _split(repetition, separators.component)
    if not 0 < component <= len(components):
        return ""
    subcomponents = _split(components[component - 1], separators.subcomponent)
    if not 0 < subcomponent <= len(subcomponents):
        return ""
    return unescape(subcomponents[subcomponent - 1], separators)


@dataclass(frozen=True)
class Message:
    """A decoded message: its segments in order."""

    segments: tuple[Segment, ...]
    separators: Separators
    charset: str

    def first(self, name: str) -> Segment | None:
        for segment in self.segments:
            if segment.name == name:
                return segment
        return None

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    def value(self, path: str) -> str:
        """`PID-5`, `PID-3[2].4.2`, `MSH-9.2`: the first segment's leaf value, "" when absent."""
        match = PATH.match(path)
        if match is None:
            raise ValueError(f"not an HL7 path: {path}")
        segment = self.first(match["segment"])
        if segment is None:
            return ""
        return segment.value(
            int(match["field"]), int(match["repetition"] or 1), int(match["component"] or 1), int(match["sub"] or 1)
        )

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.segments]


def decode(raw: bytes, default_charset: str = "UNICODE UTF-8") -> Message:
    """Bytes as received (one MLLP frame's content) to a Message; Er7Error when unreadable."""
    if raw.startswith(BOM):
        raw = raw[len(BOM) :]
    if not raw.startswith(b"MSH"):
        raise Er7Error("100", "The message does not start with an MSH segment", "MSH")
    if len(raw) < 8:
        raise Er7Error("100", "The MSH segment is cut short", "MSH")
    separators = _separators(raw)
    charset_name = _declared_charset(raw, separators) or default_charset
    codec = CHARSETS.get(charset_name.upper())
    if codec is None:
        raise Er7Error("103", f"MSH-18 names a character set this bridge does not read: {charset_name[:40]}", "MSH-18")
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as error:
        raise Er7Error(
            "102", f"The bytes are not valid {charset_name} as MSH-18 declares (byte {error.start})", "MSH-18"
        ) from None
    return Message(tuple(_segments(text, separators)), separators, charset_name)


def _separators(raw: bytes) -> Separators:
    field = chr(raw[3])
    end = raw.find(field.encode("latin-1"), 4)
    encoding = raw[4:end].decode("latin-1") if end > 0 else ""
    if field.isalnum() or len(encoding) not in (4, 5) or len(set(encoding[:4] + field)) != 5 or any(c.isalnum() for c in encoding):
        raise Er7Error("102", "MSH-1/MSH-2 must hold the field separator and the four encoding characters", "MSH-2")
    return Separators(field, encoding[0], encoding[1], encoding[2], encoding[3])


def _declared_charset(raw: bytes, separators: Separators) -> str:
    """MSH-18, read from the MSH segment's bytes (ASCII in every charset we accept)."""
    first = SEGMENT_ENDS.split(raw[:4096].decode("latin-1"), 1)[0]
    fields = first.split(separators.field)
    return fields[17].split(separators.repetition)[0].strip() if len(fields) > 17 else ""


def _segments(text: str, separators: Separators) -> Iterator[Segment]:
    # A last segment without its terminator is read too (files and HTTP bodies often lack it;
    # MLLP's end block already tells a whole frame): a message cut short is then refused for
    # what it lacks (a required segment, an invalid segment name).
    for number, line in enumerate(SEGMENT_ENDS.split(text), start=1):
        if not line.strip():
            continue
        name = line[:3]
        if SEGMENT_NAME.fullmatch(name) is None or (len(line) > 3 and line[3] != separators.field):
            raise Er7Error("100", f"Segment {number} has no valid segment name", f"segment {number}")
        parts = line.split(separators.field)
        if name == "MSH":
            parts = ["MSH", separators.field] + parts[1:]
        yield Segment(name, tuple(parts), separators)


ESCAPE_SEQUENCE = re.compile(r"\\(F|S|T|R|E|X[0-9A-Fa-f]*|\.br|H|N|Z[^\\]*)\\")


def unescape(value: str, separators: Separators = STANDARD) -> str:
    """Decode HL7 escape sequences (with this message's escape character)."""
    if separators.escape not in value:
        return value
    escape = re.escape(separators.escape)
    pattern = ESCAPE_SEQUENCE if separators.escape == "\\" else re.compile(
        f"{escape}(F|S|T|R|E|X[0-9A-Fa-f]*|\\.br|H|N|Z[^{escape}]*){escape}"
    )
    replacements = {"F": separators.field, "S": separators.component, "T": separators.subcomponent,
                    "R": separators.repetition, "E": separators.escape, ".br": "\n", "H": "", "N": ""}

    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in replacements:
            return replacements[code]
        if code.startswith("X"):
            try:
                return bytes.fromhex(code[1:]).decode("latin-1")
            except ValueError:
                return ""
        return ""  # \Z..\ locally defined escapes carry no text we can render

    return pattern.sub(replace, value)


def escape(value: str, separators: Separators = STANDARD) -> str:
    """Escape text for writing into a field (strict writing)."""
    out = value.replace(separators.escape, f"{separators.escape}E{separators.escape}")
    for char, code in ((separators.field, "F"), (separators.component, "S"), (separators.subcomponent, "T"), (separators.repetition, "R")):
        out = out.replace(char, f"{separators.escape}{code}{separators.escape}")
    return out.replace("\r\n", "\n").replace("\r", "\n").replace("\n", f"{separators.escape}.br{separators.escape}")


__all__ = ["CHARSETS", "Er7Error", "Message", "STANDARD", "Segment", "Separators", "decode", "escape", "leaf", "unescape"]
