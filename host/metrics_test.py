from __future__ import annotations

import contextlib
import itertools
import json
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import stim
from prometheus_client.parser import text_string_to_metric_families

from qhil.bridge import (
    FLAG_END_OF_STREAM,
    FLAG_FIRST_ROUND,
    FLAG_LAST_ROUND,
    Reason,
    ShmRing,
    SyndromePacket,
)
from qhil.bridge import warm_up as warm_up_bridge
from qhil.fpga import DetectorProgram
from qhil.host import ConfigError, DecoderService, HostStats, ServiceConfig
from qhil.host._metrics import (
    LATENCY_EDGES_NS,
    METRIC_NAMES,
    FrontEndSnapshot,
    MetricsExporter,
)
from qhil.host._service_run import LiveRun
from qhil.host._stats import LogHistogram

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana-dashboard.json"
WIRE_REASONS = [r.label for r in Reason if r != Reason.OK]
LINK_COUNTERS = (
    "packets", "not_in_session", "bad_frames", "oversized", "bad_control", "unroutable",
    "sessions", "sessions_replaced", "refused_busy", "refused_bad_hello", "refused_layout",
    "refused_unauthenticated", "refused_handshake", "disconnects",
)  # fmt: skip

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# -- fakes and helpers ----------------------------------------------------------------------------


def _hist(*values: int) -> LogHistogram:
    h = LogHistogram()
    h.record_many(np.array(values, dtype=np.int64))
    return h


class FakeRun:
    """Stands in for a ``LiveRun``: the same read-only surface."""

    def __init__(
        self,
        packets: int,
        *,
        decoded: int = 0,
        incomplete: int = 0,
        errors: int = 0,
        open_shots: int = 0,
        service: tuple[int, ...] = (),
        decode: tuple[int, ...] = (),
    ) -> None:
        self._counts = {r: i + 1 for i, r in enumerate(WIRE_REASONS)}
        self._counts.update(
            packets=packets,
            rounds_accepted=packets,
            end_of_stream=0,
            reordered=0,
            packets_missing=0,
        )
        self.shots_decoded, self.shots_incomplete, self.shots_decoder_error = (
            decoded,
            incomplete,
            errors,
        )
        self.open_shots = open_shots
        self.service_ns, self.decode_ns = _hist(*service), _hist(*decode)

    def counts(self) -> dict[str, int]:
        return dict(self._counts)


class FakeService:
    def __init__(self) -> None:
        self.live: FakeRun | None = None


class FakeLink:
    def __init__(self) -> None:
        self.values = {name: 100 + i for i, name in enumerate(LINK_COUNTERS)}
        self.session: object | None = None

    def counts(self) -> dict[str, int]:
        return dict(self.values)


@pytest.fixture
def exporter() -> Iterator[MetricsExporter]:
    with MetricsExporter.start(port=0, role="serve", decoder="pymatching", transport="zmq") as m:
        yield m


def scrape(exporter: MetricsExporter) -> Samples:
    url = f"http://127.0.0.1:{exporter.port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def buckets(samples: Samples, name: str) -> list[tuple[float, float]]:
    """(le, cumulative count) in exported order."""
    return [(float(dict(k[1])["le"]), v) for k, v in samples.items() if k[0] == f"{name}_bucket"]


def _monotonic_samples(samples: Samples) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {k: v for k, v in samples.items() if k[0].endswith(("_total", "_bucket", "_count"))}


# -- the exporter itself --------------------------------------------------------------------------


def test_build_info_and_separate_registries() -> None:
    with (
        MetricsExporter.start(port=0, role="serve", decoder="pymatching", transport="zmq") as a,
        MetricsExporter.start(port=0, role="run", decoder="pre", transport="shm") as b,
    ):
        assert a.port != b.port and 0 not in (a.port, b.port)
        info_a = [k for k in scrape(a) if k[0] == "qhil_build_info"]
        info_b = [k for k in scrape(b) if k[0] == "qhil_build_info"]
    assert len(info_a) == len(info_b) == 1
    assert dict(info_a[0][1]) | {"version": "?"} == {
        "version": "?",
        "role": "serve",
        "decoder": "pymatching",
        "transport": "zmq",
    }
    assert dict(info_b[0][1])["role"] == "run"
    assert dict(info_a[0][1])["version"] not in ("", "?")


def test_a_busy_port_names_the_port_and_the_fix() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as ex:
            MetricsExporter.start(port=port, role="serve", decoder="x", transport="zmq")
    msg = str(ex.value)
    assert f"127.0.0.1:{port}: it is in use" in msg and "--metrics-port" in msg
    assert ex.value.__traceback__ is not None and ex.value.__cause__ is None


def test_close_frees_the_port() -> None:
    first = MetricsExporter.start(port=0, role="serve", decoder="x", transport="zmq")
    port = first.port
    first.close()
    with MetricsExporter.start(port=port, role="serve", decoder="x", transport="zmq") as again:
        assert (
            value(
                scrape(again),
                "qhil_build_info",
                version=_version(),
                role="serve",
                decoder="x",
                transport="zmq",
            )
            == 1
        )


def _version() -> str:
    import importlib.metadata

    return importlib.metadata.version("qhil")


def test_session_finished_needs_a_watched_decoder(exporter: MetricsExporter) -> None:
    with pytest.raises(ValueError, match="call watch_decoder first"):
        exporter.session_finished(FakeRun(1))  # type: ignore[arg-type]


def test_a_failing_source_is_logged_and_left_out(
    exporter: MetricsExporter, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> FrontEndSnapshot:
        raise RuntimeError("front end gone")

    service = FakeService()
    service.live = FakeRun(5)
    exporter.watch_decoder(service)  # type: ignore[arg-type]
    exporter.watch_front_end(broken)
    samples = scrape(exporter)
    assert value(samples, "qhil_packets_received_total") == 5
    assert not any(k[0].startswith("qhil_rounds") for k in samples)
    assert "reading the front end failed" in caplog.text and "front end gone" in caplog.text
    exporter.watch_front_end(lambda: None)  # None: nothing to export yet, and no error
    caplog.clear()
    assert not any(k[0].startswith("qhil_rounds") for k in scrape(exporter))
    assert caplog.text == ""


def test_every_metric_name_is_exported_and_the_dashboard_uses_only_those(
    exporter: MetricsExporter,
) -> None:
    service, link = FakeService(), FakeLink()
    service.live = FakeRun(1)
    exporter.watch_decoder(service, link)  # type: ignore[arg-type]
    exporter.watch_front_end(lambda: _snapshot())
    exported = {re.sub(r"_(bucket|sum|count)$", "", name) for name, _ in scrape(exporter)}
    assert exported == set(METRIC_NAMES)
    exprs = _dashboard_exprs(json.loads(DASHBOARD.read_text()))
    assert exprs, "the dashboard has no queries?"
    names = {n for e in exprs for n in re.findall(r"qhil_[a-z_]+", e)}
    used = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}
    assert used <= set(METRIC_NAMES), f"not exported: {sorted(used - set(METRIC_NAMES))}"


def _dashboard_exprs(node: object) -> list[str]:
    if isinstance(node, dict):
        return [e for k, v in node.items() for e in ([v] if k == "expr" else _dashboard_exprs(v))]
    if isinstance(node, list):
        return [e for v in node for e in _dashboard_exprs(v)]
    return []


# -- decoder side, from fakes ---------------------------------------------------------------------


def test_decoder_counters_equal_the_sources(exporter: MetricsExporter) -> None:
    service, link = FakeService(), FakeLink()
    run = FakeRun(
        40,
        decoded=7,
        incomplete=2,
        errors=1,
        open_shots=3,
        service=(5_000, 20_000),
        decode=(3_000,),
    )
    service.live = run
    exporter.watch_decoder(service, link)  # type: ignore[arg-type]
    s = scrape(exporter)
    assert value(s, "qhil_packets_received_total") == 40
    for reason in WIRE_REASONS:
        assert value(s, "qhil_packets_rejected_total", reason=reason) == run.counts()[reason]
    for reason in ("oversized", "bad_frames", "bad_control"):
        assert value(s, "qhil_packets_rejected_total", reason=reason) == link.values[reason]
    outcomes = {"decoded": 7, "incomplete": 2, "decoder_error": 1}
    for outcome, n in outcomes.items():
        assert value(s, "qhil_shots_total", outcome=outcome) == n
    v = link.values
    refused = {
        "busy": v["refused_busy"],
        "unauthenticated": v["refused_unauthenticated"] + v["refused_handshake"],
        "not_in_session": v["not_in_session"],
        "bad_hello": v["refused_bad_hello"] + v["refused_layout"],
    }
    for reason, n in refused.items():
        assert value(s, "qhil_peers_refused_total", reason=reason) == n
    assert value(s, "qhil_sessions_total") == v["sessions"], "a link counts its sessions"
    assert value(s, "qhil_session_active") == 0, "the link holds no session"
    assert value(s, "qhil_open_shots") == 3
    assert value(s, "qhil_service_seconds_count") == 2
    assert value(s, "qhil_service_seconds_sum") == pytest.approx(25e-6)
    assert value(s, "qhil_decode_seconds_count") == 1
    link.session = object()
    assert value(scrape(exporter), "qhil_session_active") == 1


def test_without_a_link_sessions_are_serve_calls(exporter: MetricsExporter) -> None:
    service = FakeService()
    exporter.watch_decoder(service)  # type: ignore[arg-type]
    s = scrape(exporter)
    assert value(s, "qhil_sessions_total") == 0 and value(s, "qhil_session_active") == 0
    assert not any(k[0] == "qhil_peers_refused_total" for k in s), "no link, no peers"
    assert ("qhil_packets_rejected_total", (("reason", "oversized"),)) not in s
    assert value(s, "qhil_packets_received_total") == 0
    service.live = FakeRun(3)
    s = scrape(exporter)
    assert value(s, "qhil_sessions_total") == 1 and value(s, "qhil_session_active") == 1


def test_counters_stay_monotonic_across_sessions(exporter: MetricsExporter) -> None:
    service = FakeService()
    exporter.watch_decoder(service)  # type: ignore[arg-type]
    runs = [FakeRun(n, decoded=n, service=(1_000,) * n) for n in (10, 4, 1, 5)]
    seen: list[Samples] = []

    def check(packets: int, sessions: int) -> None:
        s = scrape(exporter)
        assert value(s, "qhil_packets_received_total") == packets
        assert value(s, "qhil_shots_total", outcome="decoded") == packets
        assert value(s, "qhil_service_seconds_count") == packets
        assert value(s, "qhil_sessions_total") == sessions
        seen.append(s)

    service.live = runs[0]
    check(10, 1)
    service.live = None  # serve returned; session_finished not called yet: no dip
    check(10, 1)
    exporter.session_finished(runs[0])  # type: ignore[arg-type]
    exporter.session_finished(runs[0])  # type: ignore[arg-type]
    check(10, 1)
    service.live = runs[1]
    check(14, 2)
    service.live = runs[2]  # runs[1] ended without session_finished: kept, not lost
    check(15, 3)
    exporter.session_finished(runs[1])  # type: ignore[arg-type]  # late: already counted
    check(15, 3)
    service.live = None
    exporter.session_finished(runs[2])  # type: ignore[arg-type]
    exporter.session_finished(runs[3])  # type: ignore[arg-type]  # never scraped while live
    check(20, 4)
    for before, after in itertools.pairwise(seen):
        for key, v in _monotonic_samples(before).items():
            assert after[key] >= v, key


# -- histograms -----------------------------------------------------------------------------------


def test_histogram_buckets_are_cumulative_on_the_coarse_edges(exporter: MetricsExporter) -> None:
    values = (500, 1_500, 3_000, 700_000, 1_800_000, 2_000_000_000)  # none near an edge
    service = FakeService()
    service.live = FakeRun(1, decoded=6, service=values)
    exporter.watch_decoder(service)  # type: ignore[arg-type]
    s = scrape(exporter)
    got = buckets(s, "qhil_service_seconds")
    assert [le for le, _ in got] == [*(ns / 1e9 for ns in LATENCY_EDGES_NS), float("inf")]
    expected = [sum(v <= le * 1e9 for v in values) for le, _ in got]
    assert [n for _, n in got] == expected == [1, 2, 3, 3, 3, 3, 3, 3, 3, 4, 5] + [5] * 8 + [6]
    assert value(s, "qhil_service_seconds_count") == len(values)
    assert value(s, "qhil_service_seconds_sum") == pytest.approx(sum(values) / 1e9)
    assert buckets(s, "qhil_decode_seconds")[-1] == (float("inf"), 0)


def test_histogram_buckets_never_under_report(exporter: MetricsExporter) -> None:
    values = np.random.default_rng(3).lognormal(mean=11, sigma=3, size=5_000).astype(np.int64)
    snap = _snapshot(latency_ns=_hist(*values.tolist()))
    exporter.watch_front_end(lambda: snap)
    s = scrape(exporter)
    got = buckets(s, "qhil_reaction_latency_seconds")
    counts = [n for _, n in got]
    assert counts == sorted(counts) and counts[-1] == len(values)
    assert value(s, "qhil_reaction_latency_seconds_count") == len(values)
    for le, n in got[:-1]:
        edge = le * 1e9
        # a sample counts under an edge when its fine bucket lies wholly below it
        assert np.sum(values <= edge / (1 + LogHistogram.RELATIVE_ERROR)) <= n
        assert n <= np.sum(values <= edge)


# -- front end ------------------------------------------------------------------------------------


def _snapshot(**kw: object) -> FrontEndSnapshot:
    fields: dict[str, object] = dict(
        rounds_by_fate={"decoded": 90, "lost_timeout": 4, "lost_backpressure": 1},
        corrections_rejected={"bad_crc": 2, "unknown_shot": 1},
        shots_in_flight=6,
        backlog_rounds=12,
        latency_ns=_hist(4_000, 9_000),
    )
    fields.update(kw)
    return FrontEndSnapshot(**fields)  # type: ignore[arg-type]


def test_front_end_metrics_equal_the_snapshot(exporter: MetricsExporter) -> None:
    snap = _snapshot()
    exporter.watch_front_end(lambda: snap)
    s = scrape(exporter)
    for fate, n in snap.rounds_by_fate.items():
        assert value(s, "qhil_rounds_total", fate=fate) == n
    for reason, n in snap.corrections_rejected.items():
        assert value(s, "qhil_corrections_rejected_total", reason=reason) == n
    assert value(s, "qhil_shots_in_flight") == 6 and value(s, "qhil_backlog_rounds") == 12
    assert value(s, "qhil_reaction_latency_seconds_count") == 2
    assert value(s, "qhil_reaction_latency_seconds_bucket", le="1e-05") == 2
    assert value(s, "qhil_reaction_latency_seconds_bucket", le="5e-06") == 1
    assert not any(k[0] == "qhil_open_shots" for k in s), "no decoder watched"


# -- a real decoder service -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def circuit() -> stim.Circuit:
    return stim.Circuit.generated(
        "surface_code:rotated_memory_z",
        distance=3,
        rounds=2,
        after_clifford_depolarization=0.02,
        before_measure_flip_probability=0.02,
    )


class Frontend:
    """The test as the front end of a shared-memory ring pair."""

    def __init__(self, circuit: stim.Circuit, up: ShmRing, down: ShmRing) -> None:
        self.program = DetectorProgram.from_circuit(circuit)
        meas = circuit.compile_sampler(seed=5).sample(8)
        self.dets, _ = circuit.compile_m2d_converter().convert(
            measurements=meas, separate_observables=True
        )
        self.up, self.down, self.tx = up, down, up.sender()
        self.seq = 0

    def send(self, data: bytes) -> None:
        assert self.tx.send(data, timeout_s=1.0)

    def shot(self, shot: int, rounds: tuple[int, ...] = (0, 1, 2)) -> None:
        offsets = self.program.det_offsets
        for r in rounds:
            flags = (FLAG_FIRST_ROUND if r == 0 else 0) | (FLAG_LAST_ROUND if r == 2 else 0)
            self.packet(
                shot, r, self.dets[shot % len(self.dets), offsets[r] : offsets[r + 1]], flags
            )

    def eos(self) -> None:
        self.packet(0, 0, np.zeros(0, dtype=np.bool_), FLAG_END_OF_STREAM)

    def packet(self, shot: int, rnd: int, bits: np.ndarray, flags: int) -> None:
        p = SyndromePacket(stream_id=0, shot=shot, round=rnd, seq=self.seq, t_fpga=1, bits=bits,
                           flags=flags)  # fmt: skip
        self.send(p.encode())
        self.seq += 1

    def serve(self, svc: DecoderService, got: list[LiveRun], **kw: object) -> HostStats:
        """One ``serve`` call; ``got`` receives its ``LiveRun`` (the daemon's way to get it)."""

        def on_ready() -> None:
            assert svc.live is not None
            got.append(svc.live)

        return svc.serve(self.up.receiver(), self.down.sender(), on_ready=on_ready, **kw)  # type: ignore[arg-type]


@contextlib.contextmanager
def front_end(circuit: stim.Circuit) -> Iterator[Frontend]:
    with ShmRing.create(n_slots=512) as up, ShmRing.create(n_slots=512) as down:
        yield Frontend(circuit, up, down)


def _eventually(check: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check() and time.monotonic() < deadline:
        time.sleep(2e-3)
    return check()


def _assert_decoder_metrics(s: Samples, counts: dict[str, int], shots: dict[str, int]) -> None:
    assert value(s, "qhil_packets_received_total") == counts["packets"]
    for reason in WIRE_REASONS:
        assert value(s, "qhil_packets_rejected_total", reason=reason) == counts[reason], reason
    for outcome, n in shots.items():
        assert value(s, "qhil_shots_total", outcome=outcome) == n, outcome
    assert value(s, "qhil_service_seconds_count") == shots["decoded"]
    assert value(s, "qhil_decode_seconds_count") == shots["decoded"]


def _shots(stats: HostStats) -> dict[str, int]:
    return {
        "decoded": stats.shots_decoded,
        "incomplete": stats.shots_incomplete,
        "decoder_error": stats.shots_decoder_error,
    }


def test_a_real_service_across_two_sessions(
    exporter: MetricsExporter, circuit: stim.Circuit
) -> None:
    warm_up_bridge()
    svc = DecoderService.from_circuit(circuit, config=ServiceConfig(assembly_timeout_s=60.0))
    svc.warm_up()
    exporter.watch_decoder(svc)
    runs: list[LiveRun] = []
    stop = threading.Event()
    results: list[HostStats] = []
    with front_end(circuit) as fe:
        worker = threading.Thread(
            target=lambda: results.append(fe.serve(svc, runs, should_stop=stop.is_set))
        )
        worker.start()
        try:
            for shot in range(4):
                fe.shot(shot)
            fe.shot(4, rounds=(0,))  # stays open
            fe.send(b"\x00" * 40)  # not a packet: rejected
            # decode_ns is recorded last for a batch: once it holds 4, the 4 shots are done
            assert _eventually(
                lambda: (
                    svc.live is not None
                    and svc.live.counts()["packets"] == 14
                    and svc.live.decode_ns.count == 4
                )
            )
            live = scrape(exporter)
        finally:
            stop.set()
            worker.join(timeout=30)
        first = results[0]
        assert value(live, "qhil_session_active") == 1 and value(live, "qhil_open_shots") == 1
        _assert_decoder_metrics(
            live, runs[0].counts(), {"decoded": 4, "incomplete": 0, "decoder_error": 0}
        )
        assert first.shots_incomplete == 1, "shutdown gives up the open shot"
        ended = scrape(exporter)  # serve returned; session_finished not called yet
        assert value(ended, "qhil_session_active") == 0 and value(ended, "qhil_open_shots") == 0
        _assert_decoder_metrics(ended, first.counts, _shots(first))
        exporter.session_finished(runs[0])
        _assert_decoder_metrics(scrape(exporter), first.counts, _shots(first))

        for shot in range(2):  # the second session starts from zero in the service
            fe.shot(shot)
        fe.eos()
        second = fe.serve(svc, runs)
        assert second.stopped_by == "end_of_stream" and second.shots_decoded == 2
        exporter.session_finished(runs[1])
    s = scrape(exporter)
    both = {k: first.counts[k] + second.counts[k] for k in first.counts}
    _assert_decoder_metrics(s, both, {k: v + _shots(second)[k] for k, v in _shots(first).items()})
    assert value(s, "qhil_sessions_total") == 2
    assert sum(n for (name, _), n in s.items() if name == "qhil_packets_rejected_total") >= 1
