from __future__ import annotations

import re
from pathlib import Path

from qhil.fpga import REGISTERS
from qhil.fpga._regmap import CTRL_BITS, STATUS_BITS
from qhil.fpga._regmap_verilog import HEADER_PATH, address_width, main, render_verilog_header


def _defines(text: str) -> dict[str, str]:
    return dict(re.findall(r"^`define[ \t]+(\w+)[ \t]*(\S*)", text, re.M))


def test_checked_in_header_is_current() -> None:
    assert HEADER_PATH.exists(), (
        "fpga/rtl/qhil_regmap.vh missing: run python -m qhil.fpga._regmap_verilog"
    )
    assert HEADER_PATH.read_text() == render_verilog_header(), (
        "fpga/rtl/qhil_regmap.vh is out of date with fpga/_regmap.py: "
        "run python -m qhil.fpga._regmap_verilog"
    )


def test_every_register_has_its_offset_reset_and_access() -> None:
    defs = _defines(render_verilog_header())
    aw = address_width()
    assert defs["QHIL_REG_ADDR_WIDTH"] == str(aw)
    assert 2**aw > max(r.offset for r in REGISTERS)
    assert defs["QHIL_REG_COUNT"] == str(len(REGISTERS))
    for r in REGISTERS:
        width, value = defs[f"QHIL_REG_{r.name}"].split("'h")
        assert (int(width), int(value, 16)) == (aw, r.offset), r.name
        assert int(defs[f"QHIL_REG_{r.name}_RESET"].removeprefix("32'h"), 16) == r.reset
        assert defs[f"QHIL_REG_{r.name}_RW"] == ("1" if r.access == "rw" else "0")
    for bit, pos in CTRL_BITS.items():
        assert defs[f"QHIL_CTRL_{bit}"] == str(pos)
    for bit, pos in STATUS_BITS.items():
        assert defs[f"QHIL_STATUS_{bit}"] == str(pos)
    expected = 3 * len(REGISTERS) + len(CTRL_BITS) + len(STATUS_BITS) + 3  # + guard, width, count
    assert len(defs) == expected, "no stray defines"


def test_header_is_ascii_and_guarded() -> None:
    text = render_verilog_header()
    assert text.isascii()
    assert text.count("`ifndef QHIL_REGMAP_VH") == 1 and text.rstrip().endswith(
        "`endif // QHIL_REGMAP_VH"
    )


def test_main_writes_and_checks(tmp_path: Path, capsys) -> None:
    out = tmp_path / "rtl" / "qhil_regmap.vh"
    assert main(["--output", str(out), "--check"]) == 1
    assert "run python -m qhil.fpga._regmap_verilog" in capsys.readouterr().err
    assert main(["--output", str(out)]) == 0
    assert out.read_text() == render_verilog_header()
    assert main(["--output", str(out), "--check"]) == 0
    assert main(["--output", str(out)]) == 0
    assert "up to date" in capsys.readouterr().out
