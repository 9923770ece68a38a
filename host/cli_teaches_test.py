"""The CLI teaches: help with defaults and choices, short aliases, the subcommand's
usage on errors, and one line (no traceback) for every expected failure."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from qhil.host import main
from qhil.host._cli import _parser
from qhil.host._commands import COMMANDS


def _flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)
    ]


@pytest.mark.parametrize("command", ["run", "serve", "keys", "train", "bench", "info"])
def test_every_flag_states_its_default_and_choices(command: str) -> None:
    parser = _parser()[1][command]
    for action in _flags(parser):
        text = (action.help or "").replace("%(default)s", str(action.default))
        assert "default" in text, f"qhil {command} {action.option_strings[0]}: {text!r}"
        for choice in action.choices or ():
            assert str(choice) in text, f"{action.option_strings[0]} hides {choice!r}"


def test_config_flag_help_comes_from_the_defaults_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(command_line_args=["run", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "reaction-latency budget [frontend.budget_us; default: 10.0]" in out
    assert "choices: lockstep, paced" in out


@pytest.mark.parametrize(
    ("short", "long"), [("-d", "--distance"), ("-r", "--rounds"), ("-p", "--p"), ("-n", "--shots")]
)
def test_short_aliases(short: str, long: str) -> None:
    parser = _parser()[1]["run"]
    value = "0.002" if short == "-p" else "7"
    assert vars(parser.parse_args([short, value])) == vars(parser.parse_args([long, value]))


def test_an_unknown_flag_shows_the_subcommands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(command_line_args=["run", "-p", "0.002", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: qhil run ")
    assert "qhil run: error: unrecognized arguments: --bogus" in err


def test_a_backend_this_machine_lacks_is_exit_2_with_the_fix(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import qhil.kernels

    monkeypatch.setattr(qhil.kernels, "available_backends", lambda: ("numba", "numpy"))
    args = ["run", "--decoder", "predecoder", "--backend", "cuda", "-n", "10"]
    assert main(command_line_args=args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "--backend cuda cannot run on this machine" in err
    assert "pip install 'qhil[gpu]'" in err and "numba, numpy, or auto" in err


def test_a_missing_extra_names_the_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def needs_torch(args: argparse.Namespace) -> int:
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setitem(COMMANDS, "info", needs_torch)
    assert main(command_line_args=["info"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "qhil info: error: this needs torch, which is not installed: pip install 'qhil[train]'"
    )


def test_an_internal_error_is_one_line_and_a_traceback_only_with_debug(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(args: argparse.Namespace) -> int:
        raise KeyError("oops")

    monkeypatch.setitem(COMMANDS, "info", broken)
    assert main(command_line_args=["info"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert "internal error (a bug in qhil): KeyError" in err and "--debug" in err
    assert main(command_line_args=["info", "--debug"]) == 3
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_dry_run_checks_and_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(command_line_args=["run", "--dry-run", "-d", "7", "--out", str(out)]) == 0
    assert "dry run, configuration OK, nothing started: d=7" in capsys.readouterr().out
    assert not (out / "report.json").exists()


def test_a_faulty_run_says_how_long_it_waited_for_timeouts(tmp_path: Path) -> None:
    args = ["run", "-n", "400", "--fault-rate", "0.05", "--fault-seed", "3", "--no-progress"]
    assert main(command_line_args=[*args, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    t = report["timeouts"]
    lost = report["rounds_lost"]
    assert t["correction_timeout_ms"] == 50.0 and t["assembly_timeout_ms"] == 10.0
    assert t["shots_timed_out"] + t["shots_given_up_by_decoder"] > 0
    assert (t["shots_timed_out"] > 0) == (lost["timeout"] > 0)
    assert t["waited_s"] == pytest.approx(t["shots_timed_out"] * 0.05)
    assert report["kernels"]["warm"] and report["kernels"]["compiled_during_run"] == 0
