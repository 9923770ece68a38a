"""``qhil run``: the closed loop on one machine, the decoder service in its own process.

The front end (cycle model) runs in this process; the decoder service runs in
a spawned child, reached through the bridge. The child warms up (JIT
compilation, a first decode) before the front end starts, so start-up never
shows up as latency. Ctrl-C stops the front end at a safe point: pending
shots are reported ``aborted``, the report is still written.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.connection
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import stim

from qhil.bridge import PacketSender
from qhil.bridge._faults import FaultInjector, InjectedFault
from qhil.bridge._open import BridgeSpec, open_bridge, warm_up
from qhil.fpga import CycleModel, FrontEndConfig, FrontEndResult
from qhil.host._config import RunConfig
from qhil.host._report import RunReport
from qhil.host._service import DecoderService, HostStats, ServiceConfig
from qhil.sim import NoiseModel, ShotBatch, memory_circuit, sample_shots

__all__ = ["LoopOutcome", "build_circuit", "run_loop"]

_READY_TIMEOUT_S = 300.0  # first run on a machine compiles the numba kernels


@dataclasses.dataclass(frozen=True)
class LoopOutcome:
    """A finished run: the report, and the raw records behind it."""

    report: RunReport
    result: FrontEndResult
    host: HostStats | None
    circuit: stim.Circuit
    shots: ShotBatch
    faults_up: tuple[InjectedFault, ...] = ()
    faults_down: tuple[InjectedFault, ...] = ()


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
        stall_timeout_s=f.stall_timeout_s,
        max_in_flight=f.max_in_flight,
    )


def service_config(config: RunConfig) -> ServiceConfig:
    d = config.decoder
    return ServiceConfig(
        decoder=d.name, backend=d.backend, window=d.window, assembly_timeout_s=d.assembly_timeout_s
    )


def bridge_spec(config: RunConfig) -> BridgeSpec:
    b = config.bridge
    return BridgeSpec(
        transport=b.transport,
        n_slots=b.n_slots,
        slot_size=b.slot_size,
        endpoint=b.endpoint,
        name=b.name,
    )


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
    conn: multiprocessing.connection.Connection,
) -> None:
    """The decoder process: warm up, say ready, serve, send back its stats."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    bridge = None
    try:
        service = DecoderService.from_circuit(
            stim.Circuit(circuit_text), config=service_config(config)
        )
        service.warm_up()
        warm_up()
        bridge = open_bridge(spec, side="host")
        tx = _with_faults(bridge.tx, config, side=1)
        conn.send(("ready", None))
        stats = service.serve(bridge.rx, tx, should_stop=conn.poll)
        log: tuple[InjectedFault, ...] = ()
        if isinstance(tx, FaultInjector):
            tx.flush()
            log = tuple(tx.log)
        conn.send(("done", (stats, log)))
    except Exception:
        conn.send(("error", traceback.format_exc()))
    finally:
        if bridge is not None:
            bridge.close()


@contextmanager
def _ctrl_c_requests_stop() -> Iterator[list[bool]]:
    """First Ctrl-C asks for a clean stop; a second one interrupts at once."""
    flag = [False]

    def handler(signum: int, frame: Any) -> None:
        if flag[0]:
            raise KeyboardInterrupt
        flag[0] = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: no signal handling there
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class _Child:
    """The spawned decoder process and its pipe."""

    def __init__(self, circuit: stim.Circuit, config: RunConfig, spec: BridgeSpec) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(
            target=_service_main,
            args=(str(circuit), config, spec, child_conn),
            name="qhil-decoder",
            daemon=True,
        )
        self.proc.start()
        child_conn.close()
        self.error = ""

    def wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if self.conn.poll(0.05):
                    kind, payload = self.conn.recv()
                    if kind == "ready":
                        return
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
                        return payload
                    self.error = str(payload)
                    break
            except (EOFError, OSError):
                break  # the child is gone: its pipe closed
            if attempt == 0 and self.proc.is_alive():
                self.conn.send("stop")
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(5)
        if not self.error:
            self.error = (
                f"the decoder process ended with exit code {self.proc.exitcode} and sent no stats"
            )
        return None, ()


def run_loop(
    config: RunConfig,
    *,
    progress: bool = True,
    console: Any = None,
    on_start: Callable[[], None] | None = None,
) -> LoopOutcome:
    """Run the closed loop described by ``config`` and return its outcome (nothing written).

    ``on_start`` is called once the decoder is ready, just before the first round;
    from then on Ctrl-C stops the run cleanly.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    circuit = build_circuit(config)
    shots = sample_shots(circuit, shots=config.experiment.shots, seed=config.experiment.seed)
    model = CycleModel.from_circuit(circuit, config=frontend_config(config))
    warm_up()
    spec = bridge_spec(config)
    bridge = open_bridge(spec, side="fpga") if spec.transport == "shm" else None
    child = None
    notes: list[str] = []
    try:
        if config.decoder.spawn:
            child = _Child(circuit, config, bridge.spec if bridge else spec)
            child.wait_ready()
        if bridge is None:
            bridge = open_bridge(spec, side="fpga")
        tx = _with_faults(bridge.tx, config, side=0)
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
        with bar, _ctrl_c_requests_stop() as stop:
            task = bar.add_task("run", total=config.experiment.shots, resolved=0)
            if on_start is not None:
                on_start()
            result = model.run(
                shots.measurements,
                tx=tx,
                rx=bridge.rx,
                on_progress=lambda done, resolved: bar.update(
                    task, completed=done, resolved=resolved
                ),
                should_stop=lambda: stop[0],
            )
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
    finally:
        if bridge is not None:
            bridge.close()
        if child is not None and child.proc.is_alive():
            child.proc.terminate()
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
    )
    return LoopOutcome(report, result, host, circuit, shots, faults_up, tuple(faults_down))


def write_outputs(outcome: LoopOutcome, out_dir: Path) -> list[Path]:
    """report.json and the latency histogram (written atomically)."""
    from qhil.host._render import write_histogram

    lat = outcome.result.latency_ns[outcome.result.decoded]
    return [
        outcome.report.write(out_dir),
        write_histogram(np.asarray(lat), outcome.report, out_dir / "latency_histogram.png"),
    ]
