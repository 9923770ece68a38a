"""Prometheus metrics for ``qhil serve`` and ``qhil run``: ``/metrics`` over plain HTTP.

Nothing is recorded for the exporter: every value is read at scrape time, on the HTTP
server's thread, from the sources it watches (the decoder service and its ZeroMQ link,
the front end) while their own threads keep writing. Reads take no lock on a source, so
two values of one scrape may be a batch apart (see ``LiveRun``); each value is whole.
A source that raises is logged and left out of that scrape; the scrape still answers.

Counters stay monotonic across decoder sessions although each ``serve`` call starts
from zero: the exporter adds a finished session's final numbers to its own running
totals (see ``MetricsExporter.session_finished``).

Histograms are exported on ``LATENCY_EDGES_NS`` (1-2-5 steps from 1 us to 1 s, then
+Inf). A fine ``LogHistogram`` bucket counts under an edge only when its upper edge is
at or below that edge, so a latency is never reported lower than it was (at most
``LogHistogram.RELATIVE_ERROR`` higher).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import errno
import importlib.metadata
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

import numpy as np
import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from qhil.bridge import Reason
from qhil.fpga import CycleModel
from qhil.host._config import ConfigError
from qhil.host._stats import LogHistogram

if TYPE_CHECKING:
    from qhil.bridge import ZmqServer
    from qhil.host._service import DecoderService
    from qhil.host._service_run import LiveRun

__all__ = ["LATENCY_EDGES_NS", "METRIC_NAMES", "FrontEndSnapshot", "MetricsExporter"]

_log = logging.getLogger("qhil.metrics")

# The names a Grafana dashboard (deploy/grafana-dashboard.json) queries: keep them exact.
METRIC_NAMES: tuple[str, ...] = (
    "qhil_build_info",
    "qhil_sessions_total",
    "qhil_session_active",
    "qhil_peers_refused_total",
    "qhil_packets_received_total",
    "qhil_packets_rejected_total",
    "qhil_shots_total",
    "qhil_decode_seconds",
    "qhil_service_seconds",
    "qhil_open_shots",
    "qhil_rounds_total",
    "qhil_reaction_latency_seconds",
    "qhil_shots_in_flight",
    "qhil_backlog_rounds",
    "qhil_corrections_rejected_total",
)

LATENCY_EDGES_NS: tuple[int, ...] = (
    *(m * 10**e for e in range(3, 9) for m in (1, 2, 5)),
    10**9,
)
_EDGES = np.array(LATENCY_EDGES_NS, dtype=np.int64)
_LE = (*(floatToGoString(ns / 1e9) for ns in LATENCY_EDGES_NS), "+Inf")

_WIRE_REJECTS = tuple(r.label for r in Reason if r != Reason.OK)
_LINK_REJECTS = ("oversized", "bad_frames", "bad_control")
# qhil_peers_refused_total{reason}: the ZmqServer counters each reason adds up.
_REFUSALS = {
    "busy": ("refused_busy",),
    "unauthenticated": ("refused_unauthenticated", "refused_handshake"),
    "not_in_session": ("not_in_session",),
    "bad_hello": ("refused_bad_hello", "refused_layout"),
}
_OUTCOMES = ("decoded", "incomplete", "decoder_error")  # qhil_shots_total{outcome}


@dataclasses.dataclass(frozen=True)
class FrontEndSnapshot:
    """The front end's numbers at one instant, for ``MetricsExporter.watch_front_end``.

    Counters (``rounds_by_fate``, ``corrections_rejected``, ``latency_ns``) must be
    cumulative over the process's life. ``rounds_by_fate`` is keyed by ``Fate.name.lower()``
    (``"decoded"``, ``"lost_timeout"``, ...): the dashboard selects ``fate=~"lost_.*"``.
    ``latency_ns`` (round emitted to its correction applied) is only read.
    """

    rounds_by_fate: dict[str, int]
    corrections_rejected: dict[str, int]
    shots_in_flight: int
    backlog_rounds: int
    latency_ns: LogHistogram

    @classmethod
    def of_front_end(cls, model: CycleModel) -> FrontEndSnapshot | None:
        """The software front end's run so far (None before it starts). Costs one pass
        over its per-shot ledger, which is fine at scrape intervals of seconds."""
        progress = model.progress()
        if progress is None:
            return None
        latency = LogHistogram()
        latency.record_many(progress.latency_ns)
        return cls(
            rounds_by_fate=progress.rounds_by_fate,
            corrections_rejected=progress.corrections_rejected,
            shots_in_flight=progress.shots_in_flight,
            backlog_rounds=progress.rounds_backpressure,
            latency_ns=latency,
        )


class MetricsExporter:
    """Serves ``/metrics`` from its own registry; build with :meth:`start`.

    >>> import urllib.request
    >>> latency = LogHistogram()
    >>> latency.record(3_000, count=4)
    >>> snap = FrontEndSnapshot(rounds_by_fate={"decoded": 9, "lost_timeout": 1},
    ...     corrections_rejected={}, shots_in_flight=2, backlog_rounds=0, latency_ns=latency)
    >>> with MetricsExporter.start(port=0, role="run", decoder="pymatching", transport="shm") as m:
    ...     m.watch_front_end(lambda: snap)
    ...     url = f"http://127.0.0.1:{m.port}/metrics"
    ...     text = urllib.request.urlopen(url).read().decode()
    >>> [line for line in text.splitlines() if line.startswith(("qhil_rounds", "qhil_reaction"))]
    ['qhil_rounds_total{fate="decoded"} 9.0', 'qhil_rounds_total{fate="lost_timeout"} 1.0',
     'qhil_reaction_latency_seconds_bucket{le="1e-06"} 0.0', ...,
     'qhil_reaction_latency_seconds_bucket{le="5e-06"} 4.0', ...,
     'qhil_reaction_latency_seconds_count 4.0', 'qhil_reaction_latency_seconds_sum 1.2e-05']
    """

    def __init__(self, server: WSGIServer, thread: threading.Thread, collector: _Collector) -> None:
        self._server, self._thread, self._collector = server, thread, collector
        self.port: int = server.server_port

    @classmethod
    def start(
        cls, *, port: int, addr: str = "127.0.0.1", role: str, decoder: str, transport: str
    ) -> MetricsExporter:
        """Serve ``http://addr:port/metrics`` from a daemon thread; ``port=0`` takes any free
        port (then read :attr:`port`). A port that cannot be bound raises ``ConfigError``
        naming it and ``--metrics-port``."""
        collector = _Collector(_build_info(role=role, decoder=decoder, transport=transport))
        registry = CollectorRegistry()  # its own: several exporters may run in one process
        registry.register(collector)
        try:
            server, thread = prometheus_client.start_http_server(port, addr=addr, registry=registry)
        except OSError as ex:
            why = "it is in use" if ex.errno == errno.EADDRINUSE else ex.strerror or str(ex)
            raise ConfigError(
                f"cannot serve metrics on {addr}:{port}: {why}; pick another port with "
                "--metrics-port (0 takes any free one)"
            ) from None
        return cls(server, thread, collector)

    def watch_decoder(self, service: DecoderService, link: ZmqServer | None = None) -> None:
        """Export ``service``'s counters and latencies, and ``link``'s when it is a ZeroMQ
        link (its sessions, refused peers and link-level rejects). Call it once: the
        running totals live in what it sets up."""
        self._collector.decoder = _DecoderWatch(service, link)

    def watch_front_end(self, snapshot: Callable[[], FrontEndSnapshot | None]) -> None:
        """Export what ``snapshot()`` returns at each scrape (None: nothing to export yet)."""
        self._collector.front_end = snapshot

    def session_finished(self, run: LiveRun) -> None:
        """Add a finished ``serve`` call's final numbers to the running totals.

        ``run`` is ``service.live`` captured while that call ran (e.g. in its ``on_ready``);
        it stays readable after the call returns. Call this after ``serve`` returns and
        before the next one starts. A repeated call for the same run counts it once. If it
        never comes, the run is added when a scrape first sees the next one; only a session
        that starts and ends between two scrapes is then missed.
        """
        watch = self._collector.decoder
        if watch is None:
            raise ValueError("session_finished needs a watched decoder: call watch_decoder first")
        watch.session_finished(run)

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _build_info(*, role: str, decoder: str, transport: str) -> GaugeMetricFamily:
    try:
        version = importlib.metadata.version("qhil")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    info = GaugeMetricFamily(
        "qhil_build_info",
        "Always 1; the labels say what is running.",
        labels=("version", "role", "decoder", "transport"),
    )
    info.add_metric((version, role, decoder, transport), 1)
    return info


class _Collector(Collector):
    """Builds every family at scrape time from the watched sources."""

    def __init__(self, build_info: GaugeMetricFamily) -> None:
        self.build_info = build_info
        self.decoder: _DecoderWatch | None = None
        self.front_end: Callable[[], FrontEndSnapshot | None] | None = None

    def collect(self) -> Iterator[Metric]:
        yield self.build_info
        decoder, front_end = self.decoder, self.front_end
        if decoder is not None:
            yield from _guarded("decoder", decoder.families)
        if front_end is not None:
            yield from _guarded("front end", lambda: _front_end_families(front_end()))


def _guarded(source: str, families: Callable[[], Iterable[Metric]]) -> list[Metric]:
    """All of ``families()``, or none when reading the source raised (logged)."""
    try:
        return list(families())
    except Exception:  # a scrape must never take anything down
        _log.exception("metrics: reading the %s failed; its metrics are left out", source)
        return []


class _Totals:
    """What the finished ``serve`` calls added up to."""

    def __init__(self) -> None:
        self.sessions = 0
        self.counts: collections.Counter[str] = collections.Counter()
        self.shots = dict.fromkeys(_OUTCOMES, 0)
        self.service_ns = LogHistogram()
        self.decode_ns = LogHistogram()

    def add(self, run: LiveRun) -> None:
        self.sessions += 1
        self.counts.update(run.counts())
        self.shots["decoded"] += run.shots_decoded
        self.shots["incomplete"] += run.shots_incomplete
        self.shots["decoder_error"] += run.shots_decoder_error
        self.service_ns.merge(run.service_ns)
        self.decode_ns.merge(run.decode_ns)

    def plus(self, run: LiveRun | None) -> _Totals:
        """A copy with ``run`` added; these totals are left as they are."""
        out = copy.deepcopy(self)
        if run is not None:
            out.add(run)
        return out


class _DecoderWatch:
    """The decoder side: totals of finished runs plus the run in progress.

    ``_run`` is the run counted on top of the totals: the live one, or after its ``serve``
    returned, its final numbers until ``session_finished`` adds them to the totals (so a
    scrape in between sees no dip). ``_retired`` is the last run added, so none is added
    twice. The lock keeps concurrent scrapes and ``session_finished`` from racing.
    """

    def __init__(self, service: DecoderService, link: ZmqServer | None) -> None:
        self._service, self._link = service, link
        self._lock = threading.Lock()
        self._totals = _Totals()
        self._run: LiveRun | None = None
        self._retired: LiveRun | None = None

    def session_finished(self, run: LiveRun) -> None:
        with self._lock:
            if run is not self._retired:
                self._retire(run)

    def _retire(self, run: LiveRun) -> None:
        self._totals.add(run)
        self._retired = run
        if self._run is run:
            self._run = None

    def _adopt(self, live: LiveRun | None) -> None:
        """Count ``live`` from now on; a previous run not yet retired is retired first."""
        if live is None or live is self._run or live is self._retired:
            return
        if self._run is not None:  # its session_finished never came: keep its numbers
            self._retire(self._run)
        self._run = live

    def families(self) -> list[Metric]:
        with self._lock:
            live = self._service.live
            self._adopt(live)
            now = self._totals.plus(self._run)
        rejected = {r: now.counts[r] for r in _WIRE_REJECTS}
        sessions, active, link_families = now.sessions, live is not None, []
        if self._link is not None:  # a ZeroMQ link knows the front end's sessions
            link_counts = self._link.counts()
            sessions, active = link_counts["sessions"], self._link.session is not None
            rejected |= {r: link_counts[r] for r in _LINK_REJECTS}
            link_families = [_refusals(link_counts)]
        return [
            _counter("qhil_sessions", "Decoder sessions opened.", sessions),
            _gauge("qhil_session_active", "1 while a front end's session is open.", active),
            *link_families,
            _counter(
                "qhil_packets_received", "Packets the assembler took in.", now.counts["packets"]
            ),
            _labelled_counter(
                "qhil_packets_rejected", "Packets rejected, by reason.", "reason", rejected
            ),
            _labelled_counter("qhil_shots", "Shots answered, by outcome.", "outcome", now.shots),
            _histogram("qhil_decode_seconds", "Decoder time per decoded shot.", now.decode_ns),
            _histogram(
                "qhil_service_seconds", "Last round received to correction sent.", now.service_ns
            ),
            _gauge(
                "qhil_open_shots",
                "Shots with rounds in, no correction out.",
                live.open_shots if live is not None else 0,
            ),
        ]


def _refusals(link_counts: dict[str, int]) -> CounterMetricFamily:
    refused = {why: sum(link_counts[c] for c in keys) for why, keys in _REFUSALS.items()}
    return _labelled_counter(
        "qhil_peers_refused", "Front ends refused, by reason.", "reason", refused
    )


def _front_end_families(snap: FrontEndSnapshot | None) -> list[Metric]:
    if snap is None:
        return []
    return [
        _labelled_counter("qhil_rounds", "Rounds emitted, by fate.", "fate", snap.rounds_by_fate),
        _histogram(
            "qhil_reaction_latency_seconds",
            "Round emitted to its correction applied.",
            snap.latency_ns,
        ),
        _gauge("qhil_shots_in_flight", "Shots awaiting a correction.", snap.shots_in_flight),
        _gauge("qhil_backlog_rounds", "Rounds due but not yet emitted.", snap.backlog_rounds),
        _labelled_counter(
            "qhil_corrections_rejected",
            "Corrections the front end rejected, by reason.",
            "reason",
            snap.corrections_rejected,
        ),
    ]


def _histogram(name: str, doc: str, h: LogHistogram) -> HistogramMetricFamily:
    """``h`` on the exported ``le`` edges, cumulative; +Inf (also ``_count``) holds all."""
    upper, counts = h.buckets()
    below = np.concatenate(([0], np.cumsum(counts)))  # below[i]: in the first i buckets
    cumulative = [*below[np.searchsorted(upper, _EDGES, side="right")], below[-1]]
    buckets = [(le, int(n)) for le, n in zip(_LE, cumulative, strict=True)]
    return HistogramMetricFamily(name, f"{doc} In seconds.", buckets, h.sum / 1e9)


def _counter(name: str, doc: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: int | bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=int(value))


def _labelled_counter(
    name: str, doc: str, label: str, values: dict[str, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=(label,))
    for key, value in values.items():
        family.add_metric((key,), value)
    return family
