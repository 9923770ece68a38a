"""The soak at 10^5 rounds per phase, in CI: a `qhil serve` daemon with CURVE on tcp://,
fault-free then with 0.1% faults. It checks the accounting, never a timing."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_soak_loses_nothing_fault_free_and_accounts_for_every_fault(tmp_path: Path) -> None:
    _module("soak").main(command_line_args=["--rounds-total", "100000", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "soak.json").read_text())
    free, faults = result["phases"]
    for phase in (free, faults):
        r = phase["report"]
        assert r["rounds_emitted"] >= 100_000
        assert r["rounds_decoded"] + sum(r["rounds_lost"].values()) == r["rounds_emitted"]
    assert sum(free["report"]["rounds_lost"].values()) == 0
    assert result["decoder_exit"] == 0 and len(result["decoder_sessions"]) == 2
    assert (tmp_path / "soak.png").stat().st_size > 0
    assert "| fault_free |" in (tmp_path / "soak.md").read_text()


@pytest.mark.slow
def test_network_fuzz_small(tmp_path: Path) -> None:
    _module("fuzz_network").main(command_line_args=["--count", "5000", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "fuzz_network.json").read_text())
    assert result["decoded_after"] == 2000 and not result["traceback_in_stderr"]
