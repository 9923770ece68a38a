"""``qhil bench accuracy``: logical error rates of the pre-decoder pipelines, by ``sinter.collect``.

Each task (basis, distance, rounds, noise, p) is ``qhil.sim``'s memory circuit,
sampled and decoded by sinter with four decoders, each until it has ``min_errors``
errors or ``max_shots`` shots:

- ``pymatching`` / ``pymatching-correlated``: sinter's own PyMatching 2, plain and
  with ``enable_correlations=True``;
- ``qhil-predecoder``: the CNN pre-decoder, then PyMatching on the residual;
- ``qhil-predecoder-correlated``: the pipeline ``qhil run --decoder predecoder``
  runs (``qhil.kernels.sinter_decoders``).

The CSV is sinter's own (``save_resume_filepath``): ``sinter plot`` reads it, and a
second call resumes where the first stopped. Sinter samples every decoder's shots
afresh, from OS entropy (never the seeds training draws). The pre-decoder rows'
``json_metadata`` carries ``model_id`` (weights and thresholds), so their strong
ids name the model: a call whose tasks already have rows under other strong ids
(another model or circuit) refuses rather than mix them.

Then a timing pass decodes ``min(chunk, max_shots)`` fresh shots of each task with
all four decoders, batched and (the first 500) one shot at a time, and appends one
row per decoder with no shots whose ``custom_counts`` hold the sums: nanoseconds,
and, for the pre-decoder, detection events before and after it. Sinter adds them
into the task's stats; ``host/_accuracy_report.py`` turns them into the time table.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pymatching
import sinter
import stim

from qhil.kernels import (
    SINTER_DECODERS,
    PreDecodedMatching,
    QuantizedModel,
    default_threshold,
    resolve_model,
    sinter_decoders,
)
from qhil.sim import BASES, NOISE_MODELS, NoiseModel, memory_circuit

__all__ = ["ACCURACY_DECODERS", "AccuracyTask", "run_accuracy", "time_decoders"]

PM = "pymatching"
PM_CORR = "pymatching-correlated"
PRE, PIPE = SINTER_DECODERS  # qhil-predecoder, qhil-predecoder-correlated
ACCURACY_DECODERS: tuple[str, ...] = (PM, PM_CORR, PRE, PIPE)

_B1_SHOTS = 500  # batch-1 timing: the first 500 shots of the timing pass
_WARMUP_SHOTS = 16


@dataclasses.dataclass(frozen=True, kw_only=True)
class AccuracyTask:
    """One point of the accuracy sweep.

    >>> t = AccuracyTask(basis="z", distance=5, p=0.003)
    >>> t.rounds, t.name
    (5, 'stim-depolarizing:z:d5:r5:p0.003')
    """

    basis: str
    distance: int
    p: float
    rounds: int | None = None
    noise: str = "stim-depolarizing"

    def __post_init__(self) -> None:
        if self.basis not in BASES:
            raise ValueError(f"basis must be one of {BASES}; got {self.basis!r}")
        if isinstance(self.distance, bool) or not isinstance(self.distance, int):
            raise TypeError(f"distance must be an int; got {self.distance!r}")
        if self.distance < 3 or self.distance % 2 == 0:
            raise ValueError(f"distance must be an odd integer >= 3; got {self.distance}")
        if self.rounds is None:
            object.__setattr__(self, "rounds", self.distance)
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise ValueError(f"rounds must be an integer >= 1; got {self.rounds!r}")
        if self.noise not in NOISE_MODELS:
            raise ValueError(f"noise must be one of {NOISE_MODELS}; got {self.noise!r}")
        if isinstance(self.p, bool) or not isinstance(self.p, (int, float)):
            raise TypeError(f"p must be a float; got {self.p!r}")
        object.__setattr__(self, "p", float(self.p))
        NoiseModel.from_name(self.noise, self.p)  # validates p for this model

    @property
    def name(self) -> str:
        """A short stable string naming the task (progress lines)."""
        return f"{self.noise}:{self.basis}:d{self.distance}:r{self.rounds}:p{self.p!r}"

    def metadata(self) -> dict[str, Any]:
        """The task as a JSON-ready dictionary (the sinter rows' ``json_metadata``)."""
        return {
            "basis": self.basis,
            "distance": self.distance,
            "rounds": self.rounds,
            "noise": self.noise,
            "p": self.p,
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> AccuracyTask:
        """The task of a row's ``json_metadata`` (other keys, like ``model_id``, ignored)."""
        keys = ("basis", "distance", "rounds", "noise", "p")
        if not isinstance(meta, dict) or not all(k in meta for k in keys):
            raise ValueError(f"not an accuracy task's json_metadata (keys {keys}): {meta!r}")
        return cls(
            basis=meta["basis"],
            distance=int(meta["distance"]),
            rounds=int(meta["rounds"]),
            noise=meta["noise"],
            p=float(meta["p"]),
        )

    def circuit(self) -> stim.Circuit:
        """The noisy memory circuit."""
        assert self.rounds is not None
        return memory_circuit(
            distance=self.distance,
            rounds=self.rounds,
            basis=self.basis,
            noise=NoiseModel.from_name(self.noise, self.p),
        )

    def sinter_tasks(self, *, model_id: str) -> list[sinter.Task]:
        """One ``sinter.Task`` per decoder of ``ACCURACY_DECODERS``, sharing one DEM.

        The DEM is the one sinter would build, given here so that strong ids are
        known before collecting. The pre-decoder tasks' metadata adds ``model_id``.
        """
        circuit = self.circuit()
        dem = circuit.detector_error_model(decompose_errors=True, approximate_disjoint_errors=True)
        meta = self.metadata()
        return [
            sinter.Task(
                circuit=circuit,
                detector_error_model=dem,
                decoder=dec,
                json_metadata={**meta, "model_id": model_id} if dec in SINTER_DECODERS else meta,
            )
            for dec in ACCURACY_DECODERS
        ]


def _model_id(model: QuantizedModel) -> str:
    """The weights and the default thresholds: a CSV's rows must share all of them."""
    h = hashlib.sha256()
    h.update(f"{model.weight_bits},{model.act_bits}".encode())
    h.update(f"{default_threshold(model)},{default_threshold(model, correlated=True)}".encode())
    for w, b in zip(model.weights, model.biases, strict=True):
        h.update(str(w.shape).encode())
        h.update(np.ascontiguousarray(w, dtype=np.int32).tobytes())
        h.update(np.ascontiguousarray(b, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def _timed(decode: Callable[[np.ndarray], Any], shots: np.ndarray, b1: int) -> tuple[Any, int, int]:
    """``decode(shots)``, its nanoseconds, and those of decoding ``shots[:b1]`` one by one."""
    decode(shots[:_WARMUP_SHOTS])  # JIT compilation and caches stay out of the timing
    t0 = time.perf_counter_ns()
    out = decode(shots)
    batched = time.perf_counter_ns() - t0
    t0 = time.perf_counter_ns()
    for i in range(b1):
        decode(shots[i : i + 1])
    return out, batched, time.perf_counter_ns() - t0


def time_decoders(
    circuit: stim.Circuit,
    dem: stim.DetectorErrorModel,
    *,
    model: str | Path | QuantizedModel,
    backend: str,
    shots: int,
) -> dict[str, dict[str, int]]:
    """Timing counts of each of ``ACCURACY_DECODERS`` on the same ``shots`` fresh shots.

    Every decoder gets ``timed_shots``, ``decode_ns`` (``decode_batch`` of all of
    them), ``b1_shots`` and ``b1_ns`` (the first ``b1_shots``, one call each). The
    pre-decoder pipelines add the split: ``predecoder_ns`` / ``predecoder_b1_ns``
    (inference) and ``residual_decode_ns`` / ``residual_b1_ns`` (PyMatching on the
    residual), ``detection_events`` / ``residual_events`` out of
    ``detectors_checked``, ``corrections``, and ``backend=<name>``: shots timed on it.
    """
    dets = circuit.compile_detector_sampler().sample(shots)
    dets8 = dets.astype(np.uint8)
    b1 = min(_B1_SHOTS, shots)
    counts: dict[str, dict[str, int]] = {}
    for name, correlated in ((PM, False), (PM_CORR, True)):
        m = pymatching.Matching.from_detector_error_model(dem, enable_correlations=correlated)
        decode = functools.partial(m.decode_batch, enable_correlations=correlated)
        _, ns, b1_ns = _timed(decode, dets8, b1)
        counts[name] = {"timed_shots": shots, "decode_ns": ns, "b1_shots": b1, "b1_ns": b1_ns}
    for name, correlated in SINTER_DECODERS.items():
        pipe = PreDecodedMatching.from_dem(dem, model=model, backend=backend, correlated=correlated)
        res, pre_ns, pre_b1 = _timed(pipe.predecoder.predecode, dets, b1)
        decode = functools.partial(pipe.matching.decode_batch, enable_correlations=correlated)
        _, pm_ns, pm_b1 = _timed(decode, res.residual.astype(np.uint8), b1)
        counts[name] = {
            "timed_shots": shots,
            "decode_ns": pre_ns + pm_ns,
            "b1_shots": b1,
            "b1_ns": pre_b1 + pm_b1,
            "predecoder_ns": pre_ns,
            "predecoder_b1_ns": pre_b1,
            "residual_decode_ns": pm_ns,
            "residual_b1_ns": pm_b1,
            "detection_events": int(dets.sum()),
            "residual_events": int(res.residual.sum()),
            "detectors_checked": int(dets.size),
            "corrections": int(res.corrections.sum()),
            f"backend={pipe.predecoder.backend}": shots,
        }
    return counts


class _OutOfTime(Exception):
    """Raised from sinter's progress callback to end a task's collection early."""


def _refuse_mixing(
    stats: dict[str, sinter.TaskStats], jobs: dict[str, list[sinter.Task]], csv_path: Path
) -> None:
    """Refuse a CSV whose rows for these tasks come from another model or circuit."""
    known = {
        (AccuracyTask.from_metadata(s.json_metadata).name, s.decoder): sid
        for sid, s in stats.items()
    }
    for name, task_jobs in jobs.items():
        for job in task_jobs:
            sid = known.get((name, job.decoder))
            if sid is not None and sid != job.strong_id():
                raise ValueError(
                    f"{csv_path} holds {job.decoder} rows for {name} from another model "
                    "(or another circuit); use a new CSV file per model"
                )


def run_accuracy(
    tasks: Iterable[AccuracyTask],
    *,
    csv_path: Path,
    model: str | Path | QuantizedModel = "default",
    backend: str = "auto",
    min_errors: int = 100,
    max_shots: int = 200_000,
    chunk: int = 10_000,
    max_seconds_per_task: float | None = None,
    num_workers: int = 1,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Collect each task with sinter until its targets are met, appending to ``csv_path``.

    Each decoder of a task stops at ``min_errors`` errors or ``max_shots`` shots,
    counting the rows already in the CSV: a second call with the same targets
    samples nothing, one with higher targets continues. A task whose decoders
    all have shots and no timing yet then gets the timing pass.

    Args:
        tasks: the points to measure.
        csv_path: sinter's CSV (``save_resume_filepath``), created if missing.
        model: pre-decoder model: packaged name, ``.npz`` path or ``QuantizedModel``.
        backend: pre-decoder batch backend ("numpy", "numba", "cuda") or "auto".
        min_errors: errors wanted from every decoder (sinter's ``max_errors``).
        max_shots: shots at most per decoder and task.
        chunk: shots per sinter batch at most (``max_batch_size``), and the
            timing pass's shots (at most ``max_shots``).
        max_seconds_per_task: stop collecting a task at the first result after
            this many seconds of this call (batches still in flight are lost);
            None for no limit. The timing pass is not counted.
        num_workers: sinter worker processes.
        progress: called with one line of text per result sinter reports.
    """
    if chunk < 1 or max_shots < 1 or min_errors < 0 or num_workers < 1:
        raise ValueError("need chunk >= 1, max_shots >= 1, min_errors >= 0 and num_workers >= 1")
    tasks = list(tasks)
    if len({t.name for t in tasks}) != len(tasks):
        raise ValueError("tasks must be distinct")
    csv_path = Path(csv_path)
    qmodel = resolve_model(model)
    model_id = _model_id(qmodel)
    stats: dict[str, sinter.TaskStats] = {}
    if csv_path.exists():
        try:
            stats = {s.strong_id: s for s in sinter.read_stats_from_csv_files(csv_path)}
        except ValueError as ex:
            raise ValueError(
                f"{str(csv_path)!r} is not a sinter CSV this qhil can resume (an older qhil "
                f"wrote one row id per task for all decoders; sinter says: "
                f"{str(ex).splitlines()[0]}); move it away or pass --csv NEW.csv"
            ) from None
    jobs = {task.name: task.sinter_tasks(model_id=model_id) for task in tasks}
    _refuse_mixing(stats, jobs, csv_path)

    options = {
        "num_workers": num_workers,
        "save_resume_filepath": csv_path,
        "custom_decoders": sinter_decoders(model=qmodel, backend=backend),
        "max_shots": max_shots,
        "max_errors": min_errors,
        "max_batch_size": chunk,
    }
    for name, task_jobs in jobs.items():
        _collect(task_jobs, stats, name=name, options=options, budget=max_seconds_per_task,
                 progress=progress)  # fmt: skip
        _time_if_due(task_jobs, stats, csv_path=csv_path, model=qmodel, backend=backend,
                     shots=min(chunk, max_shots))  # fmt: skip


def _collect(
    jobs: list[sinter.Task],
    stats: dict[str, sinter.TaskStats],
    *,
    name: str,
    options: dict[str, Any],
    budget: float | None,
    progress: Callable[[str], None] | None,
) -> None:
    """``sinter.collect`` one task's jobs, adding what it reports into ``stats``."""
    started = time.monotonic()

    def on_progress(update: sinter.Progress) -> None:
        for s in update.new_stats:
            stats[s.strong_id] = stats[s.strong_id] + s if s.strong_id in stats else s
            total = stats[s.strong_id]
            if progress is not None:
                progress(f"{name} {s.decoder}: {total.shots} shots, {total.errors} errors")
        if update.new_stats and budget is not None and time.monotonic() - started >= budget:
            raise _OutOfTime

    try:
        sinter.collect(tasks=jobs, progress_callback=on_progress, **options)
    except _OutOfTime:
        pass  # leaving sinter.collect stops its workers; what they reported is saved


def _time_if_due(
    jobs: list[sinter.Task],
    stats: dict[str, sinter.TaskStats],
    *,
    csv_path: Path,
    model: QuantizedModel,
    backend: str,
    shots: int,
) -> None:
    """Append the timing pass's rows for a task whose decoders all have shots and no timing."""
    ids = [job.strong_id() for job in jobs]
    have = [stats.get(sid) for sid in ids]
    if any(s is None or s.shots == 0 for s in have) or all(
        s is not None and "timed_shots" in s.custom_counts for s in have
    ):
        return
    job = jobs[0]
    assert job.circuit is not None and job.detector_error_model is not None
    counts = time_decoders(
        job.circuit, job.detector_error_model, model=model, backend=backend, shots=shots
    )
    rows = []
    for sid, task in zip(ids, jobs, strict=True):
        assert task.decoder is not None
        row = sinter.TaskStats(
            strong_id=sid,
            decoder=task.decoder,
            json_metadata=task.json_metadata,
            custom_counts=collections.Counter(counts[task.decoder]),
        )
        stats[sid] = stats[sid] + row
        rows.append(row.to_csv_line())
    with open(csv_path, "a") as f:
        f.write("".join(line + "\n" for line in rows))
