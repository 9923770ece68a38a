"""qhil.host: the decoder service, the closed-loop runner, its configuration, report and CLI.

- ``DecoderService``: rounds in from the bridge, shots assembled and decoded,
  corrections out; ``Decoder`` is the interface a decoder plugs into,
  ``StreamingDecoder`` the one for decoders fed round by round.
- ``run_loop``: the closed loop on one machine (front end here, decoder in a
  spawned process); ``RunConfig``: its TOML/CLI configuration.
- ``RunReport``: the measured outcome; ``main``: the ``qhil`` command (``qhil serve``
  is the decoder daemon: sessions, CURVE keys, JSON-lines logs).
- ``MetricsExporter``: Prometheus metrics of a decoder or a front end.
- ``run_accuracy`` / ``summarize`` / ``write_summary``: the accuracy sweep of
  PyMatching, correlated PyMatching and the pre-decoder pipelines
  (``qhil bench accuracy``), as sinter-format CSV and a report.
"""

from __future__ import annotations

from qhil.host._accuracy import ACCURACY_DECODERS, AccuracyTask, run_accuracy
from qhil.host._accuracy_report import summarize, write_summary
from qhil.host._assembler import ShotAssembler
from qhil.host._bench import bench_backends, bench_bridge, bench_loop, bench_throughput
from qhil.host._cli import main
from qhil.host._config import ConfigError, DecoderSettings, RunConfig
from qhil.host._decoders import (
    DECODERS,
    Decoder,
    PyMatchingDecoder,
    StreamingDecoder,
    make_decoder,
    register_decoder,
)
from qhil.host._export import save_run
from qhil.host._metrics import METRIC_NAMES, FrontEndSnapshot, MetricsExporter
from qhil.host._report import RunReport, machine_description
from qhil.host._runner import LoopOutcome, build_circuit, run_loop, write_outputs
from qhil.host._serve_process import ServeProcess, free_tcp_endpoint, serve_process
from qhil.host._service import DecoderService, HostStats, ServiceConfig
from qhil.host._stats import Percentiles, wilson_interval

__all__ = [
    "ACCURACY_DECODERS",
    "DECODERS",
    "METRIC_NAMES",
    "AccuracyTask",
    "ConfigError",
    "Decoder",
    "DecoderService",
    "DecoderSettings",
    "FrontEndSnapshot",
    "HostStats",
    "LoopOutcome",
    "MetricsExporter",
    "Percentiles",
    "PyMatchingDecoder",
    "RunConfig",
    "RunReport",
    "ServeProcess",
    "ServiceConfig",
    "ShotAssembler",
    "StreamingDecoder",
    "bench_backends",
    "bench_bridge",
    "bench_loop",
    "bench_throughput",
    "build_circuit",
    "free_tcp_endpoint",
    "machine_description",
    "main",
    "make_decoder",
    "register_decoder",
    "run_accuracy",
    "run_loop",
    "save_run",
    "serve_process",
    "summarize",
    "wilson_interval",
    "write_outputs",
    "write_summary",
]
