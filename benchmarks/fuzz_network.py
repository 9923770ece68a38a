"""Network fuzz: 10^6 hostile messages at a `qhil serve` daemon on tcp://127.0.0.1, then a
real front end, whose predictions must equal offline PyMatching's on the same shots.

Half the messages come from a peer that never opens a session, half from one inside
its own session (raw frames after its HELLO). The mix is ``qhil.bridge._hostile``:
random bytes, damaged and CRC-valid packets with out-of-range fields or forged
end-of-stream flags, multipart messages, forged and malformed control messages,
oversized and empty frames. Reports the server's message rate, its resident memory
before and after, and the link's counters, which must balance (every message
counted once). Writes ``docs/benchmarks/fuzz_network.md``. Run from the repository
root::

    python benchmarks/fuzz_network.py               # 10^6 messages
    python benchmarks/fuzz_network.py --count 20000

These are measurements; the balance and the decoding check raise if they fail.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from qhil.bridge import ZmqClient, hostile_messages
from qhil.host import RunConfig, machine_description, make_decoder, run_loop, serve_process

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
_DROPS = ("not_in_session", "bad_frames", "oversized", "bad_control")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _send(sock: Any, *, seed: int, count: int, batch: int = 50_000) -> None:
    for start in range(0, count, batch):  # generated in batches: bounded memory here
        for _, frames in hostile_messages(seed=seed + start, count=min(batch, count - start)):
            sock.send_multipart(frames)


def fuzz(count: int) -> dict[str, Any]:
    ctx = zmq.Context()
    try:
        with serve_process() as server:
            endpoint, pid = server.endpoint, server.proc.pid
            rss_before = _rss_mb(pid)
            t0 = time.monotonic()
            outsider = ctx.socket(zmq.DEALER)
            outsider.setsockopt(zmq.SNDHWM, 0)
            outsider.connect(endpoint)
            _send(outsider, seed=10, count=count // 2)
            with ZmqClient.connect(endpoint, name="insider", hello_timeout_s=600) as insider:
                _send(insider._live_socket(), seed=20, count=count - count // 2)
            cfg = RunConfig().with_overrides({
                "experiment.distance": 3, "experiment.rounds": 2, "experiment.shots": 2000,
                "bridge.transport": "zmq", "bridge.endpoint": endpoint, "decoder.spawn": False,
            })  # fmt: skip
            out = run_loop(cfg, progress=False)
            wall = time.monotonic() - t0
            rss_after = _rss_mb(pid)
            alive = server.proc.poll() is None
            code, events, stderr = server.stop(timeout_s=120)
    finally:
        ctx.destroy(linger=0)
    offline = make_decoder("pymatching", out.circuit).decode_batch(out.shots.detectors)
    exact = bool(np.array_equal(out.result.predictions, offline))
    sessions = [e for e in events if e["event"] == "session_ended"]
    link = sessions[-1]["link"]
    balanced = link["packets"] == link["data"] + link["control"] + sum(link[k] for k in _DROPS)
    if not (alive and exact and balanced and code == 0):
        raise AssertionError(f"alive={alive} exact={exact} balanced={balanced} {stderr[-800:]}")
    return {
        "machine": machine_description(),
        "count": count,
        "wall_s": round(wall, 1),
        "rss_before_mb": round(rss_before, 1),
        "rss_after_mb": round(rss_after, 1),
        "sessions": len(sessions),
        "link": link,
        "decoded_after": out.report.shots_decoded,
        "traceback_in_stderr": "Traceback" in stderr,
    }


def render(r: dict[str, Any]) -> str:
    link = r["link"]
    return (
        "\n".join(
            [
                "# Network fuzz: hostile messages at `qhil serve`",
                "",
                f"Machine: {r['machine']}. No GPU. {r['count']:,} hostile messages "
                "(half from a peer "
                "with no session, half inside a session), then a 2,000-shot d=3 front end.",
                "",
                f"- The daemon kept running and then decoded all {r['decoded_after']:,} shots, "
                "identical to offline PyMatching on the same shots.",
                f"- Wall time {r['wall_s']} s including the front end; the server took "
                f"{link['packets'] / r['wall_s']:,.0f} messages/s on average.",
                f"- Server RSS {r['rss_before_mb']} MB before, {r['rss_after_mb']} MB after.",
                f"- {r['sessions']:,} sessions logged (valid HELLOs in the mix open sessions; "
                "unauthenticated loopback).",
                "- Link counters (every message counted once: packets = data + control + drops): "
                + ", ".join(f"{k}={v:,}" for k, v in link.items() if v),
                "- Traceback on the server's stderr: "
                + ("yes" if r["traceback_in_stderr"] else "no"),
            ]
        )
        + "\n"
    )


def main(*, command_line_args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="default: 10^6")
    parser.add_argument("--out", type=Path, default=OUT, help=f"default: {OUT}")
    args = parser.parse_args(command_line_args)
    result = fuzz(args.count)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fuzz_network.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "fuzz_network.md").write_text(render(result))
    print(render(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
