"""The Vivado scripts (fpga/vivado/), checked without Vivado.

tclsh runs ``build.tcl`` with every Vivado command replaced by a logger (Tcl's
``unknown``), so the scripts' own Tcl (arguments, variables, procs, loops)
really runs and the block design's commands can be read back. That shows the
scripts reference files that exist and use the names the driver and the RTL
use; whether Vivado accepts them is only known by running Vivado (README.md).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import stim

from qhil.fpga.driver._driver_program import ProgramManifest, main, manifest_path, prepare_build
from qhil.fpga.driver._pynq_backend import LINK_DMA, REPLAY_DMA

FPGA = Path(__file__).resolve().parents[1]
VIVADO = FPGA / "vivado"
RTL = FPGA / "rtl"

# The qhil_frontend ports the block design is written against (fixed for issue 5).
PORTS = {
    "aclk",
    "aresetn",
    *(f"s_axis_meas_{s}" for s in ("tdata", "tvalid", "tready", "tlast", "tuser")),
    *(f"m_axis_syn_{s}" for s in ("tdata", "tkeep", "tvalid", "tready", "tlast")),
    *(f"s_axis_cor_{s}" for s in ("tdata", "tvalid", "tready", "tlast")),
    "logical_frame",
    "frame_update",
}

_DRY_RUN = r"""
set qhil_log [open [lindex $argv 0] w]
proc unknown {args} {
    global qhil_log
    puts $qhil_log [join $args "\x1f"]
    switch -- [lindex $args 0] {
        get_board_parts {return realdigital.org:rfsoc4x2:part0:1.0}
        get_property {
            switch -- [lindex $args 1] {
                PROGRESS {return 100%} SLACK {return 0.5} default {return /impl}
            }
        }
    }
    return ""
}
rename file qhil_real_file
proc file {sub args} {
    global qhil_log
    if {$sub eq "copy"} {puts $qhil_log [join [concat file copy $args] "\x1f"]; return}
    return [qhil_real_file $sub {*}$args]
}
set argv [lrange $argv 1 end]
set argc [llength $argv]
source [lindex $argv end]
"""


def _circuit() -> stim.Circuit:
    return stim.Circuit.generated("surface_code:rotated_memory_z", distance=5, rounds=5)


@pytest.fixture(scope="module")
def prep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prep")
    circuit = out / "circuit.stim"
    _circuit().to_file(str(circuit))
    assert main([str(circuit), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def dry_run(prep: Path, tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    """The Vivado commands build.tcl issues, one list of words each."""
    tclsh = shutil.which("tclsh")
    if tclsh is None:
        pytest.skip("tclsh is not installed (apt-get install tcl)")
    work = tmp_path_factory.mktemp("vivado")
    script, log = work / "dry_run.tcl", work / "commands.log"
    script.write_text(_DRY_RUN)
    args = [str(log), str(prep), str(work / "out"), "2", str(VIVADO / "build.tcl")]
    proc = subprocess.run(
        [tclsh, str(script), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return [line.split("\x1f") for line in log.read_text().splitlines() if line.strip()]


def test_prepare_writes_the_rom_parameters_and_manifest(prep: Path) -> None:
    manifest = ProgramManifest.load(prep / "qhil_program.json")
    manifest.check(_circuit())
    params = (prep / "qhil_params.tcl").read_text()
    for name, value in {**manifest.parameters, "NUM_OBS": 1}.items():
        assert f"{name} {value}" in params
    rom = prep / "qhil_detprog.hex"
    assert f"set qhil_rom_file {{{rom.resolve().as_posix()}}}" in params
    lines = rom.read_text().splitlines()
    assert len(lines) == 1 + manifest.parameters["ROUNDS_MAX"] and lines[0].startswith("//")


def test_prepare_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "none.stim"), "--out", str(tmp_path)]) == 2
    assert "none.stim" in capsys.readouterr().err
    circuit = tmp_path / "c.stim"
    _circuit().to_file(str(circuit))
    assert main([str(circuit), "--out", str(tmp_path), "--max-meas", "3"]) == 2
    assert "max_meas=3 is too small" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown RTL parameters"):
        prepare_build(_circuit(), tmp_path, parameters={"MAX_BITS": 8})


def test_build_script_references_files_that_exist(dry_run: list[list[str]], prep: Path) -> None:
    text = (VIVADO / "build.tcl").read_text()
    assert "source [file join $here bd.tcl]" in text and (VIVADO / "bd.tcl").is_file()
    # Tcl lists arrive space-separated (this machine's paths have no spaces); the
    # wrapper's path is empty in a dry run (make_wrapper is a stub).
    added = [
        p
        for cmd in dry_run
        if cmd[:2] == ["add_files", "-norecurse"]
        for w in cmd[2:]
        for p in w.split()
    ]
    assert {Path(p).name for p in added} >= {"qhil_regs.v", "qhil_regmap.vh", "qhil_detprog.hex"}
    assert all(Path(p).is_file() for p in added), added
    verilog = sorted(Path(p) for p in added if p.endswith(".v"))
    assert verilog == sorted([*RTL.glob("*.v"), VIVADO / "qhil_replay_adapter.v"])
    copies = {Path(cmd[-1]).name for cmd in dry_run if cmd[:2] == ["file", "copy"]}
    name = "qhil_rfsoc4x2"
    assert copies == {f"{name}.bit", f"{name}.hwh", manifest_path(f"{name}.bit").name}
    assert ["create_project", name] == dry_run[0][:2] and "xczu48dr-ffvg1517-2-e" in dry_run[0]


def _cells(dry_run: list[list[str]]) -> dict[str, list[str]]:
    return {cmd[-1]: cmd for cmd in dry_run if cmd[0] == "create_bd_cell"}


def test_block_design_names_match_the_driver(dry_run: list[list[str]]) -> None:
    cells = _cells(dry_run)
    assert cells["qhil_frontend_0"][1:5] == ["-type", "module", "-reference", "qhil_frontend"]
    for dma in (LINK_DMA, REPLAY_DMA):
        assert "xilinx.com:ip:axi_dma" in cells[dma]
    assert "xilinx.com:ip:axis_dwidth_converter" in cells["axis_cor_64to8"]
    assert cells["replay_adapter"][1:5] == ["-type", "module", "-reference", "qhil_replay_adapter"]
    nets = [cmd[1:] for cmd in dry_run if cmd[0] == "connect_bd_intf_net"]
    # connect_bd_intf_net's arguments are [get_bd_intf_pins ...] results: "" in a dry run,
    # so the order of get_bd_intf_pins calls tells the wiring.
    intf = [cmd[1] for cmd in dry_run if cmd[0] == "get_bd_intf_pins"]
    pairs = list(zip(intf[::2], intf[1::2], strict=True))
    assert len(nets) == len(pairs)
    for a, b in [
        (f"{REPLAY_DMA}/M_AXIS_MM2S", "replay_adapter/s_axis"),
        ("replay_adapter/m_axis", "qhil_frontend_0/s_axis_meas"),
        ("qhil_frontend_0/m_axis_syn", f"{LINK_DMA}/S_AXIS_S2MM"),
        (f"{LINK_DMA}/M_AXIS_MM2S", "axis_cor_64to8/S_AXIS"),
        ("axis_cor_64to8/M_AXIS", "qhil_frontend_0/s_axis_cor"),
        ("axi_ctrl/M00_AXI", "qhil_frontend_0/s_axi"),
    ]:
        assert (a, b) in pairs
    pins = _frontend_pins(dry_run)
    assert {"s_axi", "s_axis_meas", "m_axis_syn", "s_axis_cor", "aclk", "aresetn"} <= pins


def _frontend_pins(dry_run: list[list[str]], cell: str = "qhil_frontend_0") -> set[str]:
    words = [w for cmd in dry_run if cmd[0] in ("get_bd_pins", "get_bd_intf_pins") for w in cmd]
    return {w.split("/", 1)[1] for w in words if w.startswith(f"{cell}/")}


def test_replay_adapter_has_the_pins_the_block_design_uses(dry_run: list[list[str]]) -> None:
    ports, _ = _rtl_ports_and_parameters(VIVADO / "qhil_replay_adapter.v", "qhil_replay_adapter")
    pins = _frontend_pins(dry_run, "replay_adapter")
    assert pins == {"s_axis", "m_axis", "aclk", "aresetn"}
    for pin in pins:
        assert pin in ports or any(p.startswith(f"{pin}_") for p in ports), pin
    assert "m_axis_tuser" in ports


def _frontend_parameters(dry_run: list[list[str]]) -> dict[str, str]:
    for cmd in dry_run:
        if cmd[:2] == ["set_property", "-dict"] and any("ROM_FILE" in w for w in cmd):
            words = cmd[2].split()  # a Tcl list; the test's paths have no spaces
            pairs = zip(words[::2], words[1::2], strict=True)
            return {k.removeprefix("CONFIG."): v for k, v in pairs}
    raise AssertionError("no set_property -dict with the front end's parameters")


def test_front_end_parameters_come_from_the_prepared_build(
    dry_run: list[list[str]], prep: Path
) -> None:
    manifest = ProgramManifest.load(prep / "qhil_program.json")
    params = _frontend_parameters(dry_run)
    assert params == {
        "ROM_FILE": (prep / "qhil_detprog.hex").resolve().as_posix(),
        **{k: str(v) for k, v in manifest.parameters.items()},
        "NUM_OBS": "1",
    }


def _rtl_ports_and_parameters(
    path: Path, module_name: str = "qhil_frontend"
) -> tuple[set[str], set[str]]:
    """The port and parameter names of ``module_name`` in ``path``."""
    text = re.sub(r"//[^\n]*|/\*.*?\*/", "", path.read_text(), flags=re.S)
    module = re.search(rf"\bmodule\s+{module_name}\b(.*?)\bendmodule\b", text, flags=re.S)
    assert module, f"{path.name} defines no module {module_name}"
    header = module.group(1).split(";", 1)[0]
    ports = set(
        re.findall(r"\b(?:input|output|inout)\s+(?:wire\s+|reg\s+)?(?:\[[^\]]*\]\s*)?(\w+)", header)
    )
    params = set(re.findall(r"\bparameter\s+(?:integer\s+)?(\w+)", module.group(1)))
    return ports, params


def test_rtl_has_the_ports_and_parameters_the_block_design_uses(
    dry_run: list[list[str]],
) -> None:
    path = RTL / "qhil_frontend.v"
    if not path.is_file():
        pytest.skip("fpga/rtl/qhil_frontend.v is not there yet")
    ports, params = _rtl_ports_and_parameters(path)
    assert PORTS <= ports, f"missing ports: {sorted(PORTS - ports)}"
    assert any(p.startswith("s_axi_aw") for p in ports) and "s_axi_rdata" in ports
    for pin in _frontend_pins(dry_run):
        assert pin in ports or any(p.startswith(f"{pin}_") for p in ports), pin
    missing = set(_frontend_parameters(dry_run)) - params
    assert not missing, f"qhil_frontend has no parameter(s) {sorted(missing)}"


def test_the_rtl_check_reads_a_verilog_2005_header(tmp_path: Path) -> None:
    path = tmp_path / "qhil_frontend.v"
    path.write_text(
        "// module qhil_frontend (input wire commented_out);\n"
        "module qhil_frontend #(\n  parameter MAX_MEAS = 169, // d=13\n"
        "  parameter integer ROUNDS_MAX = 8\n) (\n  input  wire        aclk,\n"
        "  output reg  [31:0] logical_frame, /* frame */\n  output wire frame_update\n);\n"
        "  localparam W = 2;\n  wire [W-1:0] inner;\nendmodule\n"
    )
    ports, params = _rtl_ports_and_parameters(path)
    assert ports == {"aclk", "logical_frame", "frame_update"}
    assert params == {"MAX_MEAS", "ROUNDS_MAX"}
