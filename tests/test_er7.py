"""ER7 reading and ACK writing, checked against hl7apy on the samples (the tokeniser must see
what hl7apy sees), plus charsets, escapes and separators."""

from __future__ import annotations

from pathlib import Path

import pytest
from hl7apy.parser import parse_message
from hypothesis import given
from hypothesis import strategies as st

from hl7v2_bridge.ack import Problem, acknowledge
from hl7v2_bridge.er7 import CHARSETS, Er7Error, decode, escape, unescape
from tests.bridge_fixtures import SAMPLES

FRENCH = sorted((SAMPLES / "fr").glob("*.hl7"))


def _hl7apy(path: Path):  # type: ignore[no-untyped-def]
    raw = path.read_bytes()
    charset = CHARSETS[decode(raw).charset]
    return parse_message(raw.decode(charset).replace("\n", "\r"), find_groups=False)


@pytest.mark.parametrize("path", FRENCH, ids=lambda p: p.name)
def test_tokeniser_agrees_with_hl7apy(path: Path) -> None:
    ours = decode(path.read_bytes())
    theirs = _hl7apy(path)
    assert ours.names == [segment.name for segment in theirs.children]  # Z segments kept too
    for segment, reference in zip(ours.segments, theirs.children):
        repetitions: dict[int, list[str]] = {}
        for field in reference.children:  # hl7apy: one child per repetition
            repetitions.setdefault(int(field.name.split("_")[1]), []).append(field.to_er7())
        for number, expected in repetitions.items():
            if segment.name == "MSH" and number <= 2:
                continue
            assert segment.repetitions(number) == expected, (segment.name, number)


def test_values_and_repetitions() -> None:
    message = decode((SAMPLES / "fr" / "A03-discharge-home.hl7").read_bytes())
    assert message.charset == "8859/1"
    assert message.value("MSH-9.2") == "A03" and message.value("MSH-12") == "2.5"
    assert message.value("PID-3[2].1") == "1450312123456"
    assert message.value("PID-3[2].4.2") == "1.2.250.1.213.1.4.10"
    assert message.value("PID-5[2].1") == "DUPONT"
    assert message.value("ROL-3.2") == "Infirmier(e) libéral(e)"  # ISO 8859-1 decoded
    assert [s.value(3, component=1) for s in message.all("DG1")] == ["I50.0", "I10"]
    assert message.value("ZBE-4") == "INSERT"


def test_utf8_and_bom() -> None:
    raw = (SAMPLES / "fr" / "A03-discharge-had-utf8.hl7").read_bytes()
    assert decode(raw).value("PID-5.1") == "LEFÈVRE"
    assert decode(b"\xef\xbb\xbf" + raw).value("PID-5.2") == "René"
    crlf = raw.replace(b"\r", b"\r\n")
    assert decode(crlf).names == decode(raw).names


def test_unreadable_messages_say_why() -> None:
    with pytest.raises(Er7Error) as missing:
        decode(b"PID|1||x\r")
    assert missing.value.code == "100"
    with pytest.raises(Er7Error) as charset:
        decode(b"MSH|^~\\&|A|B|C|D|20261120||ADT^A03|1|P|2.5|||||FRA|8859/7\r")
    assert charset.value.code == "103"
    with pytest.raises(Er7Error) as bad_utf8:
        decode((SAMPLES / "bad" / "latin1-declared-utf8.hl7").read_bytes())
    assert bad_utf8.value.code == "102" and bad_utf8.value.location == "MSH-18"


def test_escapes_and_other_separators() -> None:
    assert unescape("R\\E\\gime \\T\\ sel\\.br\\fin \\X41\\") == "R\\gime & sel\nfin A"
    raw = b"MSH#*!%$#A#B#C#D#20261120##ADT*A03#1#P#2.5\rPID#1##id*x*y*z$1.2.3\r"
    message = decode(raw)
    assert message.value("MSH-9.2") == "A03" and message.value("PID-3.4.2") == "1.2.3"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_escape_then_unescape_is_identity(text: str) -> None:
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    assert unescape(escape(text)) == expected


def test_ack_swaps_sender_and_echoes_the_control_id() -> None:
    message = decode((SAMPLES / "fr" / "A03-discharge-home.hl7").read_bytes())
    ack = acknowledge(message, "AE", [Problem("101", "PV1-45 manque | vraiment", "PV1-45")])
    segments = ack.decode("latin-1").split("\r")
    msh = segments[0].split("|")
    assert msh[2:6] == ["CALIPSO", "HCS^100000999^FINEG", "CRISTALNET", "CHTROYES^1.2.250.1.71.4.2.2.100000999^ISO"]
    assert msh[8] == "ACK^A03^ACK" and msh[11] == "2.5^FRA^2.11" and msh[17] == "8859/1"
    assert segments[1] == "MSA|AE|CHT20261120143000017"
    err = segments[2].split("|")
    assert err[2] == "PV1^1^45" and err[3] == "101^Required field missing^HL70357" and err[4] == "E"
    assert unescape(err[8]) == "PV1-45 manque | vraiment"
    parsed = parse_message(ack.decode("latin-1"), find_groups=False)  # hl7apy reads what we write
    assert parsed.msa.msa_1.value == "AE"
