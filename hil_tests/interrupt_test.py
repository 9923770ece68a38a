"""End-to-end: Ctrl-C or SIGTERM during a run stops it cleanly and still writes a full report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest


def test_ctrl_c_mid_run_writes_a_complete_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qhil.host", "run", "--distance", "3", "--rounds", "1",
         "--shots", "3000000", "--out", str(out), "--no-progress", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches it
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = _first_line_after_compiling(proc.stderr)
        assert "streaming" in line, line + proc.stderr.read()
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole group, decoder included
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    report = json.loads((out / "report.json").read_text())
    assert report == json.loads(stdout)
    assert report["aborted"] == "interrupted"
    assert 0 < report["shots_decoded"] <= report["shots_emitted"] < report["shots_planned"]
    lost = sum(report["rounds_lost"].values())
    assert report["rounds_decoded"] + lost == report["rounds_emitted"]
    assert report["host"] is not None  # the decoder finished cleanly and reported
    assert not list(out.glob("*.tmp*"))  # nothing half-written


@pytest.mark.parametrize("whole_group", [False, True], ids=["parent", "process-group"])
def test_sigterm_mid_run_acts_as_ctrl_c(tmp_path: Path, whole_group: bool) -> None:
    # `kill PID` reaches the parent alone; a service manager's stop reaches every process.
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qhil.host", "run", "--distance", "3", "--rounds", "1",
         "--shots", "3000000", "--out", str(out), "--no-progress", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = _first_line_after_compiling(proc.stderr)
        assert "decoder ready" in line, line + proc.stderr.read()
        time.sleep(1.0)
        if whole_group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    report = json.loads((out / "report.json").read_text())
    assert report == json.loads(stdout)
    assert report["aborted"] == "interrupted"
    assert 0 < report["shots_decoded"] <= report["shots_emitted"] < report["shots_planned"]
    assert report["host"] is not None  # the decoder outlived the signal and reported


def test_a_killed_parent_leaves_a_quiet_decoder(tmp_path: Path) -> None:
    """The decoder child sees its pipe close and exits without a traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "qhil.host", "run", "--distance", "3", "--rounds", "1",
         "--shots", "3000000", "--out", str(tmp_path), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = _first_line_after_compiling(proc.stderr)
        assert "decoder ready" in line, line + proc.stderr.read()
        time.sleep(0.5)
        proc.kill()  # no clean-up in the parent at all
        # stderr closes once every holder, the decoder child included, has exited.
        stderr = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def _first_line_after_compiling(stream: Any) -> str:
    """The next line that is not a cold cache's "compiling kernels" status line."""
    line = stream.readline()
    while "compiling kernels" in line:
        line = stream.readline()
    return str(line)
