"""A ``qhil serve`` daemon in a child process, for loop tests and benchmarks that need the
decoder as a separate program, as on a rack.

>>> free_tcp_endpoint().startswith("tcp://127.0.0.1:")
True
"""

from __future__ import annotations

import dataclasses
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["ServeProcess", "free_tcp_endpoint", "serve_process"]


def free_tcp_endpoint() -> str:
    """A tcp:// endpoint on loopback whose port was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@dataclasses.dataclass
class ServeProcess:
    """A running ``qhil serve --log-format json`` on ``endpoint``."""

    proc: subprocess.Popen[str]
    endpoint: str

    def stop(self, *, timeout_s: float = 60.0) -> tuple[int, list[dict[str, Any]], str]:
        """SIGTERM, then wait: its exit status, its JSON log events, and its stderr."""
        self.proc.send_signal(signal.SIGTERM)
        stdout, stderr = self.proc.communicate(timeout=timeout_s)
        events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        return self.proc.returncode, events, stderr


@contextmanager
def serve_process(
    *flags: str, endpoint: str = "", distance: int = 3, rounds: int = 2
) -> Iterator[ServeProcess]:
    """Start ``qhil serve`` over zmq (extra command-line ``flags`` appended) and wait
    until it listens; killed on the way out if still running."""
    endpoint = endpoint or free_tcp_endpoint()
    args = ["serve", "--transport", "zmq", "--endpoint", endpoint, "--distance",
            str(distance), "--rounds", str(rounds), "--log-format", "json", *flags]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "qhil.host", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if first.startswith("{") and json.loads(first).get("event") == "compiling":
            # a cold kernel cache; "listening" follows
            first = proc.stdout.readline()
        if not first.startswith("{") or json.loads(first).get("event") != "listening":
            raise RuntimeError(f"qhil serve did not start: {first}{proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
        yield ServeProcess(proc, endpoint)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
