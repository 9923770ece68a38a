"""``qhil info``'s front-end line: the board with its bitstream, or the cycle model and why."""

from __future__ import annotations

from pathlib import Path

import pytest

import qhil.fpga.driver._driver as driver
from qhil.fpga.driver._board import BoardProbe
from qhil.host import main


def _front_end_line(capsys: pytest.CaptureFixture[str]) -> str:
    assert main(command_line_args=["info"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("front end:")]
    assert len(lines) == 1
    return lines[0]


def test_info_names_the_cycle_model_and_why(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = BoardProbe(False, "pynq is not importable (ModuleNotFoundError); ...")
    monkeypatch.setattr(driver, "find_board", lambda: probe)
    assert _front_end_line(capsys) == f"front end:  cycle model ({probe.reason})"


def test_info_names_the_board_and_its_bitstream(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(driver, "find_board", lambda: BoardProbe(True, "found", name="ZCU111"))
    bit = tmp_path / "qhil_zcu111.bit"
    monkeypatch.delenv(driver.BITSTREAM_ENV, raising=False)
    line = _front_end_line(capsys)
    assert line.startswith(
        "front end:  cycle model (a PYNQ board (ZCU111) is here but no bitstream"
    )
    bit.write_bytes(b"")
    monkeypatch.setenv(driver.BITSTREAM_ENV, str(bit))
    assert "qhil_zcu111.hwh is missing" in _front_end_line(capsys)
    bit.with_suffix(".hwh").write_text("")
    assert _front_end_line(capsys) == f"front end:  board ZCU111, bitstream {bit}"
