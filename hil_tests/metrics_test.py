"""Prometheus metrics during a real run: a `qhil serve` daemon and a front end each serve
/metrics; scraped while shots stream, the counters only grow, and at the end they equal
the run's report."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from qhil.host import MetricsExporter, RunConfig, run_loop


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_scraped_counters_grow_during_the_run_and_match_the_report() -> None:
    endpoint, decoder_port = f"tcp://127.0.0.1:{_free_port()}", _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qhil.host",
            "serve",
            "--transport",
            "zmq",
            "--endpoint",
            endpoint,
            "--distance",
            "3",
            "--rounds",
            "2",
            "--log-format",
            "json",
            "--metrics-port",
            str(decoder_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    decoded_key = ("qhil_rounds_total", (("fate", "decoded"),))
    seen: list[float] = []
    done = threading.Event()
    try:
        assert server.stdout is not None
        assert json.loads(server.stdout.readline())["event"] == "listening"
        with MetricsExporter.start(
            port=0, role="front_end", decoder="pymatching", transport="zmq"
        ) as front_end:

            def watch() -> None:
                while not done.is_set():
                    seen.append(scrape(front_end.port).get(decoded_key, 0.0))
                    time.sleep(0.05)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            cfg = RunConfig().with_overrides(
                {
                    "experiment.distance": 3,
                    "experiment.rounds": 2,
                    "experiment.shots": 4000,
                    "bridge.transport": "zmq",
                    "bridge.endpoint": endpoint,
                    "decoder.spawn": False,
                }
            )
            out = run_loop(cfg, progress=False, metrics=front_end)
            done.set()
            watcher.join(5)
            fe = scrape(front_end.port)
        time.sleep(0.3)  # the daemon closes the session's books
        dec = scrape(decoder_port)
    finally:
        done.set()
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
    report = out.report
    assert seen == sorted(seen) and len(seen) >= 3, "front-end counters only grow"
    assert fe[decoded_key] == report.rounds_decoded == 4000 * 3
    assert fe[("qhil_reaction_latency_seconds_count", ())] == report.shots_decoded
    assert dec[("qhil_shots_total", (("outcome", "decoded"),))] == report.shots_decoded
    assert dec[("qhil_packets_received_total", ())] == report.rounds_emitted + 1  # + end of stream
    assert dec[("qhil_service_seconds_count", ())] == report.shots_decoded
    assert dec[("qhil_sessions_total", ())] == 1
