"""Prometheus metrics during a real run: a `qhil serve` daemon and a front end each serve
/metrics; scraped while shots stream, the counters only grow, and at the end they equal
the run's report."""

from __future__ import annotations

import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from qhil.host import MetricsExporter, RunConfig, free_tcp_endpoint, run_loop, serve_process


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_scraped_counters_grow_during_the_run_and_match_the_report() -> None:
    decoder_port = int(free_tcp_endpoint().rsplit(":", 1)[1])
    decoded_key = ("qhil_rounds_total", (("fate", "decoded"),))
    seen: list[float] = []
    done = threading.Event()
    with serve_process("--metrics-port", str(decoder_port)) as server:
        with MetricsExporter.start(
            port=0, role="front_end", decoder="pymatching", transport="zmq"
        ) as front_end:

            def watch() -> None:
                while not done.is_set():
                    seen.append(scrape(front_end.port).get(decoded_key, 0.0))
                    time.sleep(0.05)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            cfg = RunConfig().with_overrides({
                "experiment.distance": 3, "experiment.rounds": 2, "experiment.shots": 4000,
                "bridge.transport": "zmq", "bridge.endpoint": server.endpoint,
                "decoder.spawn": False,
            })  # fmt: skip
            try:
                out = run_loop(cfg, progress=False, metrics=front_end)
            finally:
                done.set()
                watcher.join(5)
            fe = scrape(front_end.port)
        time.sleep(0.3)  # the daemon closes the session's books
        dec = scrape(decoder_port)
        server.stop()
    report = out.report
    assert seen == sorted(seen) and len(seen) >= 3, "front-end counters only grow"
    assert fe[decoded_key] == report.rounds_decoded == 4000 * 3
    assert fe[("qhil_reaction_latency_seconds_count", ())] == report.shots_decoded
    assert dec[("qhil_shots_total", (("outcome", "decoded"),))] == report.shots_decoded
    assert dec[("qhil_packets_received_total", ())] == report.rounds_emitted + 1  # + end of stream
    assert dec[("qhil_service_seconds_count", ())] == report.shots_decoded
    assert dec[("qhil_sessions_total", ())] == 1
