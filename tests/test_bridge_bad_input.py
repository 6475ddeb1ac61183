"""Broken and foreign HL7 v2: each gets its negative ACK, nothing is written, raw bytes are kept,
and the listener keeps serving. Framing survives any TCP chunking."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hl7v2_bridge.client import MllpClient, ack_code
from fhir_server.storage.inbox import REJECTED
from hl7v2_bridge.mllp import Discarded, Frame, FrameReader, Oversized, frame
from tests.bridge_fixtures import SAMPLES, STORY, counts, sample

# file -> (ACK code, HL7 table 0357 error code) as bad/README.md asks
BAD = {
    "no-msh.hl7": ("AR", "100"),
    "bad-encoding-characters.hl7": ("AR", "102"),
    "truncated-mid-segment.hl7": ("AE", "100"),  # read up to the cut: a discharge without PV1
    "unsupported-event.hl7": ("AR", "201"),
    "a03-without-pid.hl7": ("AE", "100"),
    "a03-without-pv1.hl7": ("AE", "100"),
    "bad-dates.hl7": ("AE", "102"),
    "binary-garbage.bin": ("AR", "100"),
    "latin1-declared-utf8.hl7": ("AR", "102"),
    "wrong-version.hl7": ("AR", "203"),
}


def test_every_bad_sample_has_an_expectation() -> None:
    assert {p.name for p in (SAMPLES / "bad").iterdir() if p.name != "README.md"} == set(BAD)


@pytest.mark.parametrize("name", sorted(BAD))
async def test_bad_samples_get_their_negative_ack_and_nothing_is_written(name: str, bridged: tuple[FastAPI, httpx.AsyncClient, int]) -> None:
    app, client, port = bridged
    raw = (SAMPLES / "bad" / name).read_bytes()
    async with MllpClient("127.0.0.1", port) as mllp:
        ack = await mllp.send(raw)
        code, error = BAD[name]
        assert ack_code(ack) == code, ack
        err = [s for s in ack.split(b"\r") if s.startswith(b"ERR")]
        assert err and f"|{error}^".encode() in err[0], err
        after = await mllp.send(sample(STORY[0]))  # the same connection keeps serving
        assert ack_code(after) == "AA"
    found = await counts(client)
    assert found["Communication"] == 0 and found["CarePlan"] == 0
    kept = await app.state.bridge.inbox.listing(REJECTED)
    assert len(kept) == 1 and kept[0]["error"]["code"] == error
    stored = await app.state.bridge.inbox.get(kept[0]["_id"])
    assert bytes(stored["raw"]) == raw  # the raw bytes, kept for inspection


async def test_public_v28_samples_are_accepted_or_refused_for_a_reason(bridged: tuple[FastAPI, httpx.AsyncClient, int]) -> None:
    app, client, port = bridged
    outcomes = {}
    async with MllpClient("127.0.0.1", port) as mllp:
        for path in sorted((SAMPLES / "public").glob("*.hl7")):
            # the samples all carry control id MSG00001: as one sender, each needs its own
            raw = path.read_bytes().replace(b"|MSG00001|", f"|PUB-{path.stem}|".encode())
            head, separator, rest = raw.partition(b"\n")
            fields = head.split(b"|")
            fields[14:16] = [b"", b""][: len(fields[14:16])]  # A40 asks for no acknowledgement at all (enhanced mode): we want one
            raw = b"|".join(fields) + separator + rest
            ack = await mllp.send(raw)
            outcomes[path.name] = (ack_code(ack), [s.decode("latin-1") for s in ack.split(b"\r") if s.startswith(b"ERR")])
    for name, (code, errors) in outcomes.items():
        assert code in ("AA", "AE"), (name, code, errors)
        if code == "AE":
            assert errors and errors[0].split("|")[3], (name, errors)  # a justified AE names its reason
    assert outcomes["ADT-A01-01.hl7"][0] == "AA", outcomes["ADT-A01-01.hl7"]
    assert outcomes["ADT-A03-01.hl7"][0] == "AA", outcomes["ADT-A03-01.hl7"]
    async with MllpClient("127.0.0.1", port) as mllp:
        assert ack_code(await mllp.send(sample(STORY[0]))) == "AA"  # still serving


async def test_oversized_frame_is_refused_and_the_connection_closed(bridged: tuple[FastAPI, httpx.AsyncClient, int]) -> None:
    app, client, port = bridged
    async with MllpClient("127.0.0.1", port) as mllp:
        await mllp.send_raw(b"\x0bMSH|^~\\&|" + b"X" * (1024 * 1024 + 10))
        ack = await mllp.receive()
        assert ack_code(ack) == "AR"
        with pytest.raises(ConnectionError):
            await mllp.send(sample(STORY[0]))
    async with MllpClient("127.0.0.1", port) as mllp:
        assert ack_code(await mllp.send(sample(STORY[0]))) == "AA"


async def test_bytes_outside_frames_are_discarded(bridged: tuple[FastAPI, httpx.AsyncClient, int]) -> None:
    app, client, port = bridged
    async with MllpClient("127.0.0.1", port) as mllp:
        await mllp.send_raw(b"noise before\r\n" + frame(sample(STORY[0])) + b"\x1c\x0dtrailing")
        assert ack_code(await mllp.receive()) == "AA"
        assert ack_code(await mllp.send(sample(STORY[1]))) == "AA"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=60), st.binary(max_size=20))
def test_frames_survive_any_chunking(cuts: list[int], noise: bytes) -> None:
    messages = [sample(name) for name in STORY[:3]]
    stream = noise.replace(b"\x0b", b"") + b"".join(frame(m) for m in messages)
    reader = FrameReader()
    events = []
    position = 0
    for cut in cuts + [len(stream)]:
        events.extend(reader.feed(stream[position : position + cut]))
        position += cut
        if position >= len(stream):
            break
    frames = [e.content for e in events if isinstance(e, Frame)]
    assert frames == messages
    assert not any(isinstance(e, Oversized) for e in events)
    assert sum(e.size for e in events if isinstance(e, Discarded)) == len(noise.replace(b"\x0b", b""))


async def test_chunked_delivery_over_the_socket(bridged: tuple[FastAPI, httpx.AsyncClient, int]) -> None:
    app, client, port = bridged
    stream = b"".join(frame(sample(name)) for name in STORY[:2])
    async with MllpClient("127.0.0.1", port) as mllp:
        for start in range(0, len(stream), 97):
            await mllp.send_raw(stream[start : start + 97])
            await asyncio.sleep(0)
        assert [ack_code(await mllp.receive()) for _ in range(2)] == ["AA", "AA"]


async def test_a_trickling_sender_is_cut_off_at_the_frame_deadline(settings) -> None:
    """Slow-loris over MLLP: a frame begun must be whole within the frame timeout, however
    often bytes keep arriving (each trickle would reset an idle timeout). Others keep being served."""
    from dataclasses import replace

    from fhir_server.app import create_app
    from tests.conftest import running

    async with running(create_app(replace(settings, mllp_port=0, mllp_frame_timeout=1.0))) as app:
        port = app.state.mllp_port
        message = frame(sample(STORY[0]))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        closed = False
        for byte in message[:40]:  # one byte every 0.2 s: 8 s for these 40, were it never cut off
            try:
                writer.write(bytes([byte]))
                await writer.drain()
                if await asyncio.wait_for(reader.read(100), 0.2) == b"":
                    closed = True
                    break
            except asyncio.TimeoutError:
                continue
            except ConnectionError:
                closed = True
                break
        assert closed and loop.time() - started < 4  # cut off at ~1 s, no ACK for the half frame
        writer.close()
        async with MllpClient("127.0.0.1", port) as mllp:  # a sender in one piece is served as before
            assert ack_code(await mllp.send(sample(STORY[0]))) == "AA"
        # a long stream of whole frames in small chunks is not cut off: each frame has its own time
        stream = b"".join(frame(sample(STORY[0]).replace(b"CHT2026", f"SLOW{n:03d}".encode())) for n in range(6))
        async with MllpClient("127.0.0.1", port) as mllp:
            for start in range(0, len(stream), 400):
                await mllp.send_raw(stream[start : start + 400])
                await asyncio.sleep(0.05)
            assert [ack_code(await mllp.receive()) for _ in range(6)] == ["AA"] * 6
