"""``qhil run``: the closed loop on one machine, the decoder service in its own process.

The front end (cycle model) runs in this process; the decoder service runs in
a spawned child, reached through the bridge. The child warms up (JIT
compilation, a first decode) before the front end starts, so start-up never
shows up as latency. Ctrl-C or SIGTERM stops the front end at a safe point:
pending shots are reported ``aborted``, the report is still written.

The front end samples its shots chunk by chunk as it streams them, so a long
run holds one chunk of samples, not all of them; its per-shot record (fates,
predictions, latencies) is kept whole. ``LoopOutcome.shots`` samples the shots
again from (circuit, seed) when asked, for checks and ``--save``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import stim

from qhil.bridge import (
    BridgeSpec,
    CurveKeys,
    FaultInjector,
    InjectedFault,
    KernelCacheReport,
    PacketReceiver,
    PacketSender,
    ZmqClient,
    kernel_cache_report,
    layout_fingerprint,
    on_first_compile,
    open_bridge,
    warm_up,
)
from qhil.fpga import CycleModel, DetectorProgram, FrontEndConfig, FrontEndResult
from qhil.host._affinity import pinned
from qhil.host._config import RunConfig
from qhil.host._metrics import FrontEndSnapshot, MetricsExporter
from qhil.host._prepare import compiling_message, preparing
from qhil.host._report import RunReport
from qhil.host._service import DecoderService, HostStats, ServiceConfig
from qhil.host._stop_requests import STOP_SIGNALS, StopRequests, ctrl_c_requests_stop
from qhil.sim import (
    NoiseModel,
    ShotBatch,
    memory_circuit,
    sample_measurement_chunks,
    sample_shot_chunks,
    sample_shots,
)

__all__ = ["LoopOutcome", "build_circuit", "run_loop"]

_READY_TIMEOUT_S = 300.0  # first run on a machine compiles the numba kernels
_PARENT_GONE = (EOFError, OSError)  # the child's pipe once the parent died (BrokenPipeError...)


@dataclasses.dataclass(frozen=True)
class LoopOutcome:
    """A finished run: the report, and the raw records behind it.

    The sampled shots are not kept (GBs for millions of shots): ``shots`` and
    ``shot_chunks()`` sample them again from ``circuit`` and ``seed``, which
    gives exactly the shots the front end streamed (``result`` has one row per
    planned shot, streamed or not).
    """

    report: RunReport
    result: FrontEndResult
    host: HostStats | None
    circuit: stim.Circuit
    seed: int
    faults_up: tuple[InjectedFault, ...] = ()
    faults_down: tuple[InjectedFault, ...] = ()

    def shot_chunks(self) -> Iterator[ShotBatch]:
        """The run's shots, chunk by chunk, in shot order (memory: one chunk)."""
        return sample_shot_chunks(self.circuit, shots=len(self.result.fates), seed=self.seed)

    @functools.cached_property
    def shots(self) -> ShotBatch:
        """All of the run's shots in one batch, sampled on first use."""
        return sample_shots(self.circuit, shots=len(self.result.fates), seed=self.seed)


def build_circuit(config: RunConfig) -> stim.Circuit:
    e = config.experiment
    noise = NoiseModel.from_name(e.noise, e.p)
    return memory_circuit(distance=e.distance, rounds=e.rounds, basis=e.basis, noise=noise)


def frontend_config(config: RunConfig) -> FrontEndConfig:
    f = config.frontend
    return FrontEndConfig(
        mode=f.mode,
        fabric_clock_hz=f.fabric_clock_mhz * 1e6,
        round_time_s=f.round_time_us * 1e-6,
        budget_s=f.budget_us * 1e-6,
        correction_timeout_s=f.correction_timeout_s,
        stall_timeout_s=f.stall_s,
        max_in_flight=f.max_in_flight,
    )


def service_config(config: RunConfig) -> ServiceConfig:
    d = config.decoder
    return ServiceConfig(
        decoder=d.name,
        backend=d.backend,
        window=d.window,
        assembly_timeout_s=config.assembly_timeout_s,
    )


def bridge_spec(config: RunConfig) -> BridgeSpec:
    b = config.bridge
    return BridgeSpec(
        transport=b.transport,
        n_slots=b.n_slots,
        slot_size=b.slot_size,
        endpoint=b.endpoint,
        name=b.name,
        keys_dir=b.keys,
    )


def link_keys(config: RunConfig) -> CurveKeys | None:
    """CURVE keys for a run's zmq link: the configured folder, else (when the run spawns
    its own decoder) a fresh pair only the two processes hold; None over shm."""
    b = config.bridge
    if b.transport != "zmq":
        return None
    if b.keys:
        return CurveKeys.load(b.keys)
    return CurveKeys.ephemeral() if config.decoder.spawn else None


def circuit_layout(circuit: stim.Circuit) -> int:
    """The layout fingerprint both sides of a zmq link check at the handshake."""
    program = DetectorProgram.from_circuit(circuit)
    return layout_fingerprint(program.bits_per_round, circuit.num_observables)


def _with_faults(tx: PacketSender, config: RunConfig, side: int) -> PacketSender:
    b = config.bridge
    if b.fault_rate == 0:
        return tx
    kinds = tuple(k.strip() for k in b.fault_kinds.split(",") if k.strip())
    return FaultInjector(tx, rate=b.fault_rate, kinds=kinds, seed=b.fault_seed * 2 + side)


def _service_main(
    circuit_text: str,
    config: RunConfig,
    spec: BridgeSpec,
    keys: CurveKeys | None,
    conn: multiprocessing.connection.Connection,
) -> None:
    """The decoder process: warm up, say ready, serve, send back its stats.
    If the parent went away meanwhile, it ends quietly: nobody is left to tell."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)  # the parent decides when to stop
    bridge = None
    try:
        if config.decoder.cpu != -1:  # a process of its own: pinned for its life
            os.sched_setaffinity(0, {config.decoder.cpu})
        circuit = stim.Circuit(circuit_text)
        service = DecoderService.from_circuit(circuit, config=service_config(config))
        with on_first_compile(lambda: _tell_parent(conn, ("status", compiling_message("decoder")))):
            service.warm_up()
            warm_up()
        bridge = open_bridge(spec, side="host", keys=keys, layout=circuit_layout(circuit))
        tx = _with_faults(bridge.tx, config, side=1)
        ready = kernel_cache_report()
        _tell_parent(conn, ("ready", ready))
        stats = service.serve(bridge.rx, tx, should_stop=conn.poll)
        log: tuple[InjectedFault, ...] = ()
        if isinstance(tx, FaultInjector):
            tx.flush()
            log = tuple(tx.log)
        compiled_in_run = kernel_cache_report().compiled - ready.compiled
        _tell_parent(conn, ("done", (stats, log, compiled_in_run)))
    except Exception:
        _tell_parent(conn, ("error", traceback.format_exc()))
    finally:
        if bridge is not None:
            bridge.close()


def _tell_parent(conn: multiprocessing.connection.Connection, message: Any) -> None:
    with contextlib.suppress(*_PARENT_GONE):  # the parent died: nobody to tell
        conn.send(message)


class _Child:
    """The spawned decoder process and its pipe."""

    def __init__(
        self, circuit: stim.Circuit, config: RunConfig, spec: BridgeSpec, keys: CurveKeys | None
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(
            target=_service_main,
            args=(str(circuit), config, spec, keys, child_conn),
            name="qhil-decoder",
            daemon=True,
        )
        self.proc.start()
        child_conn.close()
        self.error = ""
        self.kernels: KernelCacheReport | None = None  # the child's, once it is ready
        self.compiled_in_run = 0

    def wait_ready(self, on_status: Callable[[str], None] | None = None) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if self.conn.poll(0.05):
                    kind, payload = self.conn.recv()
                    if kind == "ready":
                        self.kernels = payload
                        return
                    if kind == "status":
                        if on_status is not None:
                            on_status(payload)
                        continue
                    raise RuntimeError(f"the decoder process failed to start:\n{payload}")
            except (EOFError, OSError):
                self.proc.join(5)
                raise RuntimeError(
                    f"the decoder process exited with code {self.proc.exitcode} during start-up"
                ) from None
            if not self.proc.is_alive():
                raise RuntimeError(
                    f"the decoder process exited with code {self.proc.exitcode} during start-up"
                )
        raise RuntimeError(f"the decoder process was not ready after {_READY_TIMEOUT_S:.0f} s")

    def collect(self, *, wait_s: float) -> tuple[HostStats | None, tuple[InjectedFault, ...]]:
        """The child's stats, asking it to stop if it has not ended by itself."""
        for attempt in range(2):
            try:
                if self.conn.poll(wait_s):
                    kind, payload = self.conn.recv()
                    if kind == "done":
                        self.proc.join(5)
                        stats, log, self.compiled_in_run = payload
                        return stats, log
                    self.error = str(payload)
                    break
            except (EOFError, OSError):
                break  # the child is gone: its pipe closed
            if attempt == 0 and self.proc.is_alive():
                self.conn.send("stop")
        if self.proc.is_alive():
            self.proc.kill()  # it ignores SIGTERM, as it does Ctrl-C
        self.proc.join(5)
        if not self.error:
            self.error = (
                f"the decoder process ended with exit code {self.proc.exitcode} and sent no stats"
            )
        return None, ()


def _link_notes(bridge: Any) -> list[str]:
    """What the report says about the link: decoder restarts seen by the front end."""
    link = bridge.link
    if not isinstance(link, ZmqClient) or not link.decoder_restarts:
        return []
    return [
        f"the decoder restarted {len(link.decoder_restarts)} time(s) during the run; the "
        "front end opened a new session each time (shots in flight then are counted under "
        "their fates)"
    ]


def run_loop(
    config: RunConfig,
    *,
    progress: bool = True,
    console: Any = None,
    on_start: Callable[[], None] | None = None,
    on_status: Callable[[str], None] | None = None,
    metrics: MetricsExporter | None = None,
) -> LoopOutcome:
    """Run the closed loop described by ``config`` and return its outcome (nothing written).

    ``metrics``: an exporter that serves the front end's counters while it runs.
    ``on_start`` is called once the decoder is ready, just before the first round;
    ``on_status`` with a line to show while start-up takes long (kernels compiling).
    Called from the main thread, Ctrl-C or SIGTERM raises KeyboardInterrupt before
    then; from then on the first one stops the run cleanly.
    """
    with ctrl_c_requests_stop() as requests:
        circuit = build_circuit(config)
        spec = bridge_spec(config)
        bridge = open_bridge(spec, side="fpga") if spec.transport == "shm" else None
        keys = link_keys(config)
        child = None
        notes: list[str] = []
        try:
            with preparing(on_status) as prep:
                if config.decoder.spawn:  # first: it compiles alongside this process
                    child = _Child(circuit, config, bridge.spec if bridge else spec, keys)
                model = CycleModel.from_circuit(circuit, config=frontend_config(config))
                warm_up()
                if child is not None:
                    child.wait_ready(on_status)
                    prep.decoder = child.kernels
            if metrics is not None:
                metrics.watch_front_end(lambda: FrontEndSnapshot.of_front_end(model))
            if bridge is None:
                bridge = open_bridge(spec, side="fpga", keys=keys, layout=circuit_layout(circuit))
            tx = _with_faults(bridge.tx, config, side=0)
            with pinned("frontend", config.frontend.cpu):  # after the decoder was spawned
                result = _front_end(
                    model, circuit, config, tx=tx, rx=bridge.rx, requests=requests,
                    progress=progress, console=console, on_start=on_start,
                )  # fmt: skip
            faults_up: tuple[InjectedFault, ...] = ()
            if isinstance(tx, FaultInjector):
                tx.flush()
                faults_up = tuple(tx.log)
            host: HostStats | None = None
            faults_down: tuple[InjectedFault, ...] = ()
            if child is not None:
                host, faults_down = child.collect(wait_s=2.0 if not result.aborted else 0.5)
                if child.error:
                    notes.append(child.error.strip().splitlines()[-1])
            notes += _link_notes(bridge)
        finally:
            if bridge is not None:
                bridge.close()
            if child is not None and child.proc.is_alive():
                child.proc.kill()  # it ignores SIGTERM
    if host is not None:
        host.check_balanced()
    result.check_nothing_lost_silently()
    report = RunReport.build(
        config=config.to_dict(),
        transport=spec.transport,
        decoder=config.decoder.name,
        result=result,
        host=host,
        shared_clock=True,
        notes=tuple(notes),
        kernels=prep.warmth(
            decoder_compiled_in_run=child.compiled_in_run if child else 0
        ).to_dict(),
    )
    seed = config.experiment.seed
    return LoopOutcome(report, result, host, circuit, seed, faults_up, tuple(faults_down))


def _front_end(
    model: CycleModel,
    circuit: stim.Circuit,
    config: RunConfig,
    *,
    tx: PacketSender,
    rx: PacketReceiver,
    requests: StopRequests,
    progress: bool,
    console: Any,
    on_start: Callable[[], None] | None,
) -> FrontEndResult:
    """The front end's run under a progress bar, sampling its shots chunk by chunk."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    shots, seed = config.experiment.shots, config.experiment.seed
    bar = Progress(
        TextColumn("[bold]qhil run"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("shots emitted, {task.fields[resolved]:,} answered"),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
        transient=False,
    )
    with bar:
        task = bar.add_task("run", total=shots, resolved=0)
        requests.running = True  # from here on a signal asks for a clean stop
        if on_start is not None:
            on_start()
        return model.run(
            sample_measurement_chunks(circuit, shots=shots, seed=seed),
            shots=shots,
            tx=tx,
            rx=rx,
            on_progress=lambda done, resolved: bar.update(task, completed=done, resolved=resolved),
            should_stop=lambda: requests.stop,
        )


def write_outputs(outcome: LoopOutcome, out_dir: Path) -> list[Path]:
    """report.json, the latency histogram and the latency timeline (written atomically)."""
    from qhil.host._render import write_histogram, write_timeline

    r, report = outcome.result, outcome.report
    lat = np.asarray(r.latency_ns[r.decoded])
    return [
        report.write(out_dir),
        write_histogram(lat, report, out_dir / "latency_histogram.png"),
        write_timeline(
            r.emit_ns, r.latency_ns, r.decoded, report, out_dir / "latency_timeline.png"
        ),
    ]
