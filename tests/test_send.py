"""`calipso send` (hl7v2_bridge/sending.py) against the real MLLP listener: original and
enhanced mode, messages asking for no ACK, late ACKs, and a peer that never answers."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

from hl7v2_bridge.sending import Expected, send_files
from tests.bridge_fixtures import sample


def with_msh(message: bytes, **fields: str) -> bytes:
    """The message with MSH fields replaced: with_msh(m, MSH_10="X", MSH_15="AL")."""
    header, rest = message.split(b"\r", 1)
    parts = header.decode("latin-1").split("|")
    for name, value in fields.items():
        number = int(name.split("_")[1])
        while len(parts) < number:
            parts.append("")
        parts[number - 1] = value
    return "|".join(parts).encode("latin-1") + b"\r" + rest


def write(folder: Path, messages: list[bytes]) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = []
    for number, message in enumerate(messages):
        path = folder / f"{number:02d}.hl7"
        path.write_bytes(message)
        paths.append(path)
    return paths


def patient(message: bytes, number: int) -> bytes:
    """The sample discharge for another patient (IPP and INS changed), so each is applied anew."""
    return message.replace(b"000123456^", f"00077{number:04d}^".encode()).replace(b"1450312123456", f"14503121{number:05d}".encode())


async def run(paths: list[Path], port: int, timeout: float = 20) -> tuple[int, str]:
    out = io.StringIO()
    code = await send_files(paths, "127.0.0.1", port, timeout, out, io.StringIO())
    return code, out.getvalue()


def test_what_each_message_asks_for() -> None:
    discharge = sample("A03-discharge-home.hl7")
    assert Expected.of(discharge).accept == () and Expected.of(discharge).application == ("ok", "error")
    enhanced = Expected.of(with_msh(discharge, MSH_15="AL", MSH_16="ER"))
    assert enhanced.accept == ("ok", "error") and enhanced.application == ("error",)
    silent = Expected.of(with_msh(discharge, MSH_15="NE", MSH_16="NE"))
    assert silent.accept == () and silent.application == ()


async def test_original_and_enhanced_mode_each_message_gets_its_own_acks(bridged: Any, tmp_path: Path) -> None:
    _, _, port = bridged
    discharge = sample("A03-discharge-home.hl7")
    messages = [
        with_msh(patient(discharge, 1), MSH_10="ORIG-1"),
        with_msh(patient(discharge, 2), MSH_10="ENH-2", MSH_15="AL", MSH_16="AL"),
        with_msh(patient(discharge, 3), MSH_10="ENH-3", MSH_15="AL", MSH_16="AL"),
        with_msh(patient(discharge, 4), MSH_10="ORIG-4"),
    ]
    code, said = await run(write(tmp_path / "in", messages), port)
    assert code == 0, said
    assert said.splitlines()[0] == "sent 4 messages: AA 4, CA 2"


async def test_a_message_asking_for_no_ack_is_not_waited_for(bridged: Any, tmp_path: Path) -> None:
    _, client, port = bridged
    discharge = sample("A03-discharge-home.hl7")
    messages = [with_msh(patient(discharge, 5), MSH_10="SILENT-5", MSH_15="NE", MSH_16="NE"),
                with_msh(patient(discharge, 6), MSH_10="ENH-6", MSH_15="AL", MSH_16="ER")]
    started = asyncio.get_running_loop().time()
    code, said = await run(write(tmp_path / "in", messages), port, timeout=60)
    assert code == 0, said
    assert said.splitlines()[0] == "sent 2 messages: CA 1, no ACK (as asked) 2"
    assert asyncio.get_running_loop().time() - started < 30  # neither waited the 60 s timeout
    for _ in range(100):  # the silent one is applied all the same (nobody waited for it)
        found = (await client.get("/fhir/Patient", params={"identifier": "000770005", "_count": "0"})).json()["total"]
        if found:
            break
        await asyncio.sleep(0.1)
    assert found == 1


async def test_a_peer_that_never_answers_times_out_per_file_and_the_run_goes_on(tmp_path: Path) -> None:
    """An MLLP endpoint that reads and never acknowledges (a stuck interface engine)."""
    received: list[bytes] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            received.append(data)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    discharge = sample("A03-discharge-home.hl7")
    try:
        paths = write(tmp_path / "in", [with_msh(discharge, MSH_10=f"LOST-{n}") for n in range(3)])
        code, said = await run(paths, port, timeout=0.3)
    finally:
        server.close()
    assert code == 1
    lines = said.splitlines()
    assert lines[0] == "sent 3 messages: no ACK (timed out) 3"
    assert [line.strip().split(":")[0] for line in lines[1:]] == [str(p) for p in paths]
    assert all("no acknowledgement within 0.3 s" in line for line in lines[1:])
    assert b"".join(received).count(b"\x0bMSH") == 3  # every file was sent
