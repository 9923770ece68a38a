"""The run report: what ``qhil run`` prints, and writes as ``report.json`` and a latency histogram.

Reaction latency runs from the front end emitting a shot's last round to the
front end receiving that shot's correction. When both ends share the host's
monotonic clock (shared memory, or ZeroMQ on one machine) the report splits it
into transport out (emit to decoder receipt), service (decoder receipt to
correction sent) and transport back (sent to arrival).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from qhil.fpga import Fate, FrontEndResult
from qhil.host._service import HostStats
from qhil.host._stats import Percentiles, wilson_interval

__all__ = ["RunReport", "machine_description"]


def machine_description() -> str:
    """CPU model and core count, e.g. for naming the machine a figure came from."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"


@dataclasses.dataclass(frozen=True)
class RunReport:
    """One closed-loop run, summarised. Latencies are in microseconds unless named cycles."""

    config: dict[str, Any]
    machine: str
    mode: str
    transport: str
    decoder: str
    shots_planned: int
    shots_emitted: int
    shots_decoded: int
    rounds_emitted: int
    rounds_decoded: int
    rounds_lost: dict[str, int]
    logical_errors: int
    logical_error_rate: float
    ler_ci95: tuple[float, float]
    latency_us: Percentiles
    latency_cycles: Percentiles
    budget_us: float
    budget_misses: int
    transport_out_us: Percentiles
    service_us: Percentiles
    transport_back_us: Percentiles
    decode_us_per_shot: Percentiles
    wall_s: float
    rounds_per_s: float
    shots_per_s: float
    pacing: dict[str, float] | None
    frontend_rejections: dict[str, int]
    host: dict[str, Any] | None
    registers: dict[str, int]
    aborted: str
    notes: tuple[str, ...] = ()
    kernels: dict[str, Any] | None = None  # KernelWarmth: compiled before the run, or not
    timeouts: dict[str, Any] | None = None  # shots that waited for a timeout, and for how long

    def __post_init__(self) -> None:
        lost = sum(self.rounds_lost.values())
        if self.rounds_decoded + lost != self.rounds_emitted:
            raise ValueError(
                f"report does not balance: {self.rounds_emitted} rounds emitted but "
                f"{self.rounds_decoded} decoded + {lost} lost"
            )
        if not 0 <= self.shots_decoded <= self.shots_emitted <= self.shots_planned:
            raise ValueError("need 0 <= shots_decoded <= shots_emitted <= shots_planned")

    @property
    def budget_miss_fraction(self) -> float:
        return self.budget_misses / self.shots_decoded if self.shots_decoded else 0.0

    @classmethod
    def build(
        cls,
        *,
        config: dict[str, Any],
        transport: str,
        decoder: str,
        result: FrontEndResult,
        host: HostStats | None,
        shared_clock: bool,
        notes: tuple[str, ...] = (),
        kernels: dict[str, Any] | None = None,
    ) -> RunReport:
        decoded = result.decoded
        lat_ns = result.latency_ns[decoded]
        arrive = result.emit_ns[decoded] + lat_ns
        rx, tx = result.host_rx_ns[decoded], result.host_tx_ns[decoded]
        empty = Percentiles.of(np.zeros(0))
        us = lambda a: Percentiles.of(a).scaled(1e-3)  # noqa: E731
        n_dec = int(decoded.sum())
        errors = int(result.logical_errors.sum())
        emitted_shots = int(np.count_nonzero(result.fates[:, 0] != Fate.NOT_EMITTED))
        pacing = dataclasses.asdict(result.pacing) if result.pacing else None
        return cls(
            config=config,
            machine=machine_description(),
            mode=result.mode,
            transport=transport,
            decoder=decoder,
            shots_planned=int(result.fates.shape[0]),
            shots_emitted=emitted_shots,
            shots_decoded=n_dec,
            rounds_emitted=result.rounds_emitted,
            rounds_decoded=result.rounds_decoded,
            rounds_lost=result.rounds_lost(),
            logical_errors=errors,
            logical_error_rate=errors / n_dec if n_dec else 0.0,
            ler_ci95=wilson_interval(errors, n_dec),
            latency_us=us(lat_ns),
            latency_cycles=Percentiles.of(result.latency_cycles[decoded]),
            budget_us=result.budget_cycles / result.fabric_clock_hz * 1e6,
            budget_misses=int(
                np.count_nonzero(result.latency_cycles[decoded] > result.budget_cycles)
            ),
            transport_out_us=us(rx - result.emit_ns[decoded]) if shared_clock else empty,
            service_us=us(tx - rx),
            transport_back_us=us(arrive - tx) if shared_clock else empty,
            decode_us_per_shot=host.decode_ns_per_shot.scaled(1e-3) if host else empty,
            wall_s=result.wall_s,
            rounds_per_s=result.rounds_decoded / result.wall_s if result.wall_s else 0.0,
            shots_per_s=n_dec / result.wall_s if result.wall_s else 0.0,
            pacing=pacing,
            frontend_rejections=dict(result.rejections),
            host=_host_dict(host),
            registers=result.registers,
            aborted=result.aborted,
            notes=notes,
            kernels=kernels,
            timeouts=_timeouts(result, config),
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False)

    def write(self, out_dir: Path) -> Path:
        """Write ``report.json`` atomically (a reader never sees half a file)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "report.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json() + "\n")
        os.replace(tmp, path)
        return path


def _host_dict(host: HostStats | None) -> dict[str, Any] | None:
    if host is None:
        return None
    d = dataclasses.asdict(host)
    for key in ("service_ns", "decode_ns_per_shot"):
        d[key] = dataclasses.asdict(getattr(host, key))
    return d


def _timeouts(result: FrontEndResult, config: dict[str, Any]) -> dict[str, Any] | None:
    """How many shots waited for a timeout and how long, from the fates of their rounds."""
    f, d = config.get("frontend"), config.get("decoder")
    if not f or not d:  # a report built without a run's config (tests)
        return None
    period_ms = f["round_time_us"] * 1e-3
    timed_out = int(np.count_nonzero((result.fates == Fate.LOST_TIMEOUT).any(axis=1)))
    given_up = (result.fates == Fate.LOST_SHOT_INCOMPLETE) | (result.fates == Fate.LOST_IN_TRANSIT)
    waited_s = timed_out * f["correction_timeout_rounds"] * period_ms * 1e-3
    return {
        "shots_timed_out": timed_out,
        "correction_timeout_ms": f["correction_timeout_rounds"] * period_ms,
        "waited_s": waited_s,
        "share_of_run": min(1.0, waited_s / result.wall_s) if result.wall_s else 0.0,
        "shots_given_up_by_decoder": int(np.count_nonzero(given_up.any(axis=1))),
        "assembly_timeout_ms": d["assembly_timeout_rounds"] * period_ms,
    }
