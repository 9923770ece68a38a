"""End-to-end with the decoder as a separate `qhil serve` process, as on a second machine:
over ZeroMQ TCP on loopback, and over shared memory by ring name."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid

import numpy as np
import pytest

from qhil.host import RunConfig, make_decoder, run_loop


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("transport", ["zmq", "shm"])
def test_run_against_an_external_serve(transport: str) -> None:
    if transport == "zmq":
        link = {"bridge.endpoint": f"tcp://127.0.0.1:{_free_port()}"}
        flags = ["--endpoint", link["bridge.endpoint"]]
    else:
        link = {"bridge.name": f"t{uuid.uuid4().hex[:8]}"}
        flags = ["--bridge-name", link["bridge.name"]]
    server = subprocess.Popen(
        [sys.executable, "-m", "qhil.host", "serve", "--transport", transport, *flags,
         "--distance", "3", "--rounds", "2", "--sessions", "1", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # the server is up once it says so
        if json.loads(line)["event"] == "compiling":  # a cold kernel cache: first run only
            line = server.stdout.readline()
        assert json.loads(line)["event"] in ("listening", "waiting"), (
            line + server.stderr.read() if server.stderr else line
        )
        cfg = RunConfig().with_overrides({
            "experiment.distance": 3, "experiment.rounds": 2, "experiment.shots": 400,
            "bridge.transport": transport, "decoder.spawn": False, **link,
            # Correctness, not speed: no shot may time out on a loaded CI machine.
            "frontend.correction_timeout_rounds": 500_000,
        })  # fmt: skip
        out = run_loop(cfg, progress=False)
        stdout, _ = server.communicate(timeout=30)  # --sessions 1: it exits after one
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0
    events = [json.loads(line) for line in stdout.splitlines()]
    (ended,) = [e for e in events if e["event"] == "session_ended"]
    stats = ended["stats"]
    assert stats["shots_decoded"] == 400 and stats["stopped_by"] == "end_of_stream"
    assert events[-1]["event"] == "stopped" and events[-1]["sessions"] == 1
    assert out.report.shots_decoded == 400 and out.host is None
    offline = make_decoder("pymatching", out.circuit).decode_batch(out.shots.detectors)
    np.testing.assert_array_equal(out.result.predictions, offline)
