"""``qhil bench accuracy``: logical error rates and the pre-decoder's effect, sinter-style.

For each task (basis, distance, rounds, noise, p) fresh shots are sampled in
chunks, and on the same shots three decoders run:

- ``pymatching``: PyMatching 2, uncorrelated;
- ``pymatching-correlated``: PyMatching 2 with ``enable_correlations=True``;
- ``predecoder+pymatching``: the CNN pre-decoder, then uncorrelated PyMatching
  on the residual (``final = obs_flip ^ MWPM(residual)``);
- ``predecoder+pymatching-correlated``: the pipeline ``qhil run --decoder
  predecoder`` runs: the same network at the threshold calibrated for
  correlated matching (``default_threshold(model, correlated=True)``), then
  correlated PyMatching on the residual.

Both pre-decoder rows binarize one inference's logits, each at its own
threshold; ``predecoder_ns`` is that inference.

Every chunk appends one CSV row per decoder in sinter's format
(``shots,errors,discards,seconds,decoder,strong_id,json_metadata,custom_counts``),
flushed at once, so an interrupted run loses at most the chunk in flight and a
second call resumes where the first stopped. ``custom_counts`` holds sums
(events before/after, wall-clock nanoseconds of each timed step, batch-1 shot
counts) that add across chunks; ``summarize`` (``host/_accuracy_report.py``)
turns them into densities, PyMatching µs per round (raw versus residual,
batched and batch-1) and LER ratios, and ``write_summary`` into markdown tables
and a plot.

Seeds are ``seed_base + hash(strong_id, chunk index)`` with ``seed_base`` at
least 10**9, so they never meet the seeds training draws, and a resumed run
samples new shots rather than repeating old ones.

``seconds`` in a row is the decoding wall time of that decoder for the chunk
(for the pre-decoder row: inference plus PyMatching on the residual); sampling
is not counted.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qhil.sim import BASES, NOISE_MODELS, NoiseModel, memory_circuit, sample_shots

__all__ = [
    "ACCURACY_DECODERS",
    "CSV_HEADER",
    "AccuracyTask",
    "chunk_seed",
    "read_rows",
    "run_accuracy",
]

PM = "pymatching"
PM_CORR = "pymatching-correlated"
PRE = "predecoder+pymatching"
PIPE = "predecoder+pymatching-correlated"
ACCURACY_DECODERS: tuple[str, ...] = (PM, PM_CORR, PRE, PIPE)

CSV_HEADER: tuple[str, ...] = (
    "shots",
    "errors",
    "discards",
    "seconds",
    "decoder",
    "strong_id",
    "json_metadata",
    "custom_counts",
)

_MIN_SEED_BASE = 10**9
_B1_SHOTS = 500  # batch-1 timing: the first min(500, chunk) shots of each chunk
_WARMUP_SHOTS = 64


@dataclasses.dataclass(frozen=True, kw_only=True)
class AccuracyTask:
    """One point of the accuracy sweep.

    >>> t = AccuracyTask(basis="z", distance=5, p=0.003)
    >>> t.rounds, t.strong_id
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
    def strong_id(self) -> str:
        """A stable string naming the task; the CSV's key for resuming."""
        return f"{self.noise}:{self.basis}:d{self.distance}:r{self.rounds}:p{self.p!r}"

    def metadata(self) -> dict[str, Any]:
        """The task as a JSON-ready dictionary (the CSV's ``json_metadata``)."""
        return {
            "basis": self.basis,
            "distance": self.distance,
            "rounds": self.rounds,
            "noise": self.noise,
            "p": self.p,
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> AccuracyTask:
        return cls(
            basis=meta["basis"],
            distance=int(meta["distance"]),
            rounds=int(meta["rounds"]),
            noise=meta["noise"],
            p=float(meta["p"]),
        )

    def circuit(self) -> Any:
        """The noisy memory circuit (a ``stim.Circuit``)."""
        assert self.rounds is not None
        return memory_circuit(
            distance=self.distance,
            rounds=self.rounds,
            basis=self.basis,
            noise=NoiseModel.from_name(self.noise, self.p),
        )


def chunk_seed(strong_id: str, index: int, *, seed_base: int = 10**9) -> int:
    """The sampling seed of chunk ``index`` of a task: ``seed_base`` plus a stable hash.

    >>> chunk_seed("a", 0) == chunk_seed("a", 0) != chunk_seed("a", 1)
    True
    >>> chunk_seed("a", 0) >= 10**9
    True
    """
    if seed_base < _MIN_SEED_BASE:
        raise ValueError(f"seed_base must be >= {_MIN_SEED_BASE} (training seeds lie below)")
    digest = hashlib.sha256(f"{strong_id}#{index}".encode()).digest()
    return seed_base + int.from_bytes(digest[:8], "little") % 2**60


# --------------------------------------------------------------------------- CSV


def read_rows(csv_path: Path) -> list[dict[str, Any]]:
    """The CSV's rows, parsed (numbers as ints/floats, JSON columns as dicts).

    A missing or empty file has no rows; a last line cut off mid-write (no
    newline) is ignored, and the next :func:`run_accuracy` removes it.
    """
    path = Path(csv_path)
    if not path.is_file():
        return []
    text = path.read_text()
    if not text.strip():
        return []
    lines = text.splitlines(keepends=True)
    header = next(csv.reader([lines[0]]))
    if tuple(h.strip() for h in header) != CSV_HEADER:
        raise ValueError(
            f"{path}: not an accuracy CSV (header {header!r}, expected {list(CSV_HEADER)})"
        )
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        if n == len(lines) and not line.endswith("\n"):
            break  # the row in flight when a previous run stopped: not data
        try:
            fields = next(csv.reader([line]))
            if len(fields) != len(CSV_HEADER):
                raise ValueError(f"{len(fields)} fields")
            rec = dict(zip(CSV_HEADER, (f.strip() for f in fields), strict=True))
            rows.append(
                {
                    "shots": int(rec["shots"]),
                    "errors": int(rec["errors"]),
                    "discards": int(rec["discards"]),
                    "seconds": float(rec["seconds"]),
                    "decoder": rec["decoder"],
                    "strong_id": rec["strong_id"],
                    "json_metadata": json.loads(rec["json_metadata"]),
                    "custom_counts": json.loads(rec["custom_counts"] or "{}"),
                }
            )
        except (ValueError, csv.Error) as exc:
            raise ValueError(f"{path}:{n}: malformed row ({exc})") from exc
    return rows


def _format_row(
    *,
    shots: int,
    errors: int,
    seconds: float,
    decoder: str,
    strong_id: str,
    metadata: dict[str, Any],
    counts: dict[str, int],
) -> list[str]:
    return [
        str(shots),
        str(errors),
        "0",
        f"{seconds:.6f}",
        decoder,
        strong_id,
        json.dumps(metadata, sort_keys=True, separators=(",", ":")),
        json.dumps(counts, sort_keys=True, separators=(",", ":")),
    ]


def _drop_cut_line(csv_path: Path) -> None:
    """Truncate a last line left without its newline by an interrupted write."""
    with open(csv_path, "r+b") as f:
        f.seek(0, 2)
        size = f.tell()
        if size == 0:
            return
        f.seek(-1, 2)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


def _append(csv_path: Path, rows: Sequence[list[str]]) -> None:
    """Append rows in one write, flushed; the header first if the file is new."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    fresh = not csv_path.exists() or csv_path.stat().st_size == 0
    if fresh:
        writer.writerow(CSV_HEADER)
    else:
        _drop_cut_line(csv_path)
    writer.writerows(rows)
    with open(csv_path, "a", newline="") as f:
        f.write(buf.getvalue())
        f.flush()


# --------------------------------------------------------------------------- running


def _model_id(model: Any) -> str:
    """The weights and the default thresholds: a CSV's rows must share all of them."""
    from qhil.kernels import default_threshold

    h = hashlib.sha256()
    h.update(f"{model.weight_bits},{model.act_bits}".encode())
    h.update(f"{default_threshold(model)},{default_threshold(model, correlated=True)}".encode())
    for w, b in zip(model.weights, model.biases, strict=True):
        h.update(str(w.shape).encode())
        h.update(np.ascontiguousarray(w, dtype=np.int32).tobytes())
        h.update(np.ascontiguousarray(b, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class _Progress:
    shots: dict[str, int]
    errors: dict[str, int]
    chunks: int
    model_ids: frozenset[str]


def _progress_of(rows: Iterable[dict[str, Any]], strong_id: str) -> _Progress:
    shots = dict.fromkeys(ACCURACY_DECODERS, 0)
    errors = dict.fromkeys(ACCURACY_DECODERS, 0)
    count = dict.fromkeys(ACCURACY_DECODERS, 0)
    model_ids = set()
    for r in rows:
        if r["strong_id"] != strong_id or r["decoder"] not in shots:
            continue
        shots[r["decoder"]] += r["shots"]
        errors[r["decoder"]] += r["errors"]
        count[r["decoder"]] += 1
        if r["decoder"] == PRE and "model_id" in r["json_metadata"]:
            model_ids.add(r["json_metadata"]["model_id"])
    return _Progress(shots, errors, max(count.values()), frozenset(model_ids))


def _done(prog: _Progress, *, min_errors: int, max_shots: int) -> bool:
    return max(prog.shots.values()) >= max_shots or all(
        e >= min_errors for e in prog.errors.values()
    )


def _mismatches(pred: np.ndarray, obs: np.ndarray) -> int:
    return int(np.any(np.asarray(pred, dtype=bool) != obs, axis=1).sum())


def _decode_b1(matching: Any, dets: np.ndarray, *, correlated: bool = False) -> int:
    t0 = time.perf_counter_ns()
    for i in range(dets.shape[0]):
        matching.decode(dets[i], enable_correlations=correlated)
    return time.perf_counter_ns() - t0


def _predecode_b1(pre: Any, dets: np.ndarray) -> int:
    t0 = time.perf_counter_ns()
    for i in range(dets.shape[0]):
        pre.predecode(dets[i : i + 1])
    return time.perf_counter_ns() - t0


@dataclasses.dataclass(frozen=True)
class _Decoders:
    """The four decoders of one task, and how one chunk of shots is decoded and timed."""

    plain: Any  # pymatching.Matching
    corr: Any  # pymatching.Matching with correlations
    pre: Any  # PreDecoder at the model's threshold for plain matching
    pipe_pre: Any  # the same network at the threshold for correlated matching

    @classmethod
    def for_circuit(cls, circuit: Any, model: Any, backend: str) -> _Decoders:
        import pymatching

        from qhil.kernels import PreDecoder, default_threshold

        dem = circuit.detector_error_model(decompose_errors=True)
        pre = PreDecoder.for_circuit(circuit, model=model, backend=backend)
        return cls(
            plain=pymatching.Matching.from_detector_error_model(dem),
            corr=pymatching.Matching.from_detector_error_model(dem, enable_correlations=True),
            pre=pre,
            # The pipeline (``qhil run --decoder predecoder``): the same network at the
            # threshold calibrated for correlated matching behind it.
            pipe_pre=PreDecoder.for_circuit(
                circuit, model=model, backend=pre.backend,
                threshold=default_threshold(model, correlated=True),
            ),
        )  # fmt: skip

    def warm_up(self, dets: np.ndarray) -> None:
        dets8 = dets.astype(np.uint8)
        self.plain.decode_batch(dets8)
        self.corr.decode_batch(dets8, enable_correlations=True)
        self.pre.predecode(dets)
        _decode_b1(self.plain, dets8[:8])
        _predecode_b1(self.pre, dets[:2])

    def _matched(self, res: Any, *, correlated: bool, b1: int) -> tuple[np.ndarray, int, int]:
        """Predictions of ``obs_flip ^ PyMatching(residual)``, batched and batch-1 ns."""
        m = self.corr if correlated else self.plain
        resid8 = res.residual.astype(np.uint8)
        t0 = time.perf_counter_ns()
        rest = m.decode_batch(resid8, enable_correlations=correlated)
        ns = time.perf_counter_ns() - t0
        b1_ns = _decode_b1(m, resid8[:b1], correlated=correlated)
        return res.obs_flip.astype(bool) ^ np.asarray(rest, dtype=bool), ns, b1_ns

    def chunk(
        self, dets: np.ndarray, obs: np.ndarray
    ) -> tuple[dict[str, int], dict[str, float], dict[str, dict[str, int]]]:
        """Errors, decoding seconds and custom counts of each decoder on one chunk."""
        dets8 = dets.astype(np.uint8)
        b1 = min(_B1_SHOTS, dets.shape[0])
        t0 = time.perf_counter_ns()
        pred_pm = self.plain.decode_batch(dets8)
        ns_pm = time.perf_counter_ns() - t0
        b1_pm = _decode_b1(self.plain, dets8[:b1])
        t0 = time.perf_counter_ns()
        pred_corr = self.corr.decode_batch(dets8, enable_correlations=True)
        ns_corr = time.perf_counter_ns() - t0
        b1_corr = _decode_b1(self.corr, dets8[:b1], correlated=True)
        t0 = time.perf_counter_ns()
        logits = self.pre.logits(dets)
        res = self.pre.predecode(dets, logits=logits)
        ns_pre = time.perf_counter_ns() - t0
        res_p = self.pipe_pre.predecode(dets, logits=logits)
        b1_pre = _predecode_b1(self.pre, dets[:b1])
        pred_pre, ns_resid, b1_resid = self._matched(res, correlated=False, b1=b1)
        pred_pipe, ns_pipe, b1_pipe = self._matched(res_p, correlated=True, b1=b1)
        err = {
            PM: _mismatches(pred_pm, obs),
            PM_CORR: _mismatches(pred_corr, obs),
            PRE: _mismatches(pred_pre, obs),
            PIPE: _mismatches(pred_pipe, obs),
        }
        ns = {PM: ns_pm, PM_CORR: ns_corr, PRE: ns_pre + ns_resid, PIPE: ns_pre + ns_pipe}
        counts = {
            PM: {"decode_ns": ns_pm, "pm_raw_b1_ns": b1_pm, "b1_shots": b1},
            PM_CORR: {"decode_ns": ns_corr, "b1_ns": b1_corr, "b1_shots": b1},
            PRE: {
                "events_before": int(dets.sum()),
                "events_after": int(res.residual.sum()),
                "predecoder_ns": ns_pre,
                "predecoder_b1_ns": b1_pre,
                "corrections": int(np.asarray(res.corrections).sum()),
                "pm_residual_ns": ns_resid,
                "pm_residual_b1_ns": b1_resid,
                "b1_shots": b1,
            },
            PIPE: {
                "events_after": int(res_p.residual.sum()),
                "decode_ns": ns[PIPE],
                "b1_ns": b1_pre + b1_pipe,
                "b1_shots": b1,
            },
        }
        return err, {k: v * 1e-9 for k, v in ns.items()}, counts


def run_accuracy(
    tasks: Iterable[AccuracyTask],
    *,
    csv_path: Path,
    model: Any = "default",
    backend: str = "auto",
    min_errors: int = 100,
    max_shots: int = 200_000,
    chunk: int = 10_000,
    max_seconds_per_task: float | None = None,
    seed_base: int = 10**9,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Sample and decode each task until its targets are met, appending to ``csv_path``.

    A task stops once every decoder has ``min_errors`` errors, or it reached
    ``max_shots`` shots (counting rows already in the CSV), or this call spent
    ``max_seconds_per_task`` on it. Rows already in the CSV count: a second call
    with the same targets does nothing, one with higher targets continues.

    Args:
        tasks: the points to measure.
        csv_path: sinter-format CSV, created if missing, appended to otherwise.
        model: pre-decoder model: packaged name, ``.npz`` path or ``QuantizedModel``.
        backend: pre-decoder backend (``qhil.kernels.BACKENDS``) or "auto".
        min_errors: errors wanted from every decoder.
        max_shots: shots at most per task.
        chunk: shots per chunk (one CSV row per decoder per chunk).
        max_seconds_per_task: wall-clock budget of this call per task, or None.
        seed_base: the lowest seed; at least 10**9.
        progress: called with one line of text after each chunk.
    """
    from qhil.kernels import resolve_model

    if chunk < 1 or max_shots < 1 or min_errors < 0:
        raise ValueError("need chunk >= 1, max_shots >= 1 and min_errors >= 0")
    if seed_base < _MIN_SEED_BASE:
        raise ValueError(f"seed_base must be >= {_MIN_SEED_BASE} (training seeds lie below)")
    csv_path = Path(csv_path)
    tasks = list(tasks)
    ids = [t.strong_id for t in tasks]
    if len(set(ids)) != len(ids):
        raise ValueError("tasks must be distinct")
    rows = read_rows(csv_path)
    qmodel = resolve_model(model)
    model_id = _model_id(qmodel)
    model_name = str(model) if isinstance(model, (str, Path)) else "<QuantizedModel>"

    for task in tasks:
        sid = task.strong_id
        prog = _progress_of(rows, sid)
        if prog.model_ids - {model_id}:
            raise ValueError(
                f"{csv_path} holds {PRE} rows for {sid} from another model "
                f"({', '.join(sorted(prog.model_ids))}, this one is {model_id}); "
                "use a new CSV file per model"
            )
        if _done(prog, min_errors=min_errors, max_shots=max_shots):
            continue
        circuit = task.circuit()
        decoders = _Decoders.for_circuit(circuit, qmodel, backend)
        meta = task.metadata()
        pre_meta = {**meta, "backend": decoders.pre.backend, "model": model_name,
                    "model_id": model_id}  # fmt: skip
        # Warm up (JIT, caches) on shots from a seed no chunk uses (index -1).
        warm_seed = chunk_seed(sid, -1, seed_base=seed_base)
        decoders.warm_up(sample_shots(circuit, shots=_WARMUP_SHOTS, seed=warm_seed).detectors)

        started = time.monotonic()
        index = prog.chunks
        shots_done = max(prog.shots.values())
        errors = dict(prog.errors)
        while True:
            n = min(chunk, max_shots - shots_done)
            batch = sample_shots(circuit, shots=n, seed=chunk_seed(sid, index, seed_base=seed_base))
            err, seconds, counts = decoders.chunk(batch.detectors, batch.observables)
            _append(
                csv_path,
                [
                    _format_row(
                        shots=n,
                        strong_id=sid,
                        errors=err[dec],
                        seconds=seconds[dec],
                        decoder=dec,
                        metadata=pre_meta if dec in (PRE, PIPE) else meta,
                        counts=counts[dec],
                    )
                    for dec in ACCURACY_DECODERS
                ],
            )
            index += 1
            shots_done += n
            for k, v in err.items():
                errors[k] += v
            if progress is not None:
                progress(
                    f"{sid}: {shots_done} shots, errors "
                    + ", ".join(f"{k}={errors[k]}" for k in ACCURACY_DECODERS)
                )
            if shots_done >= max_shots or all(e >= min_errors for e in errors.values()):
                break
            if (
                max_seconds_per_task is not None
                and time.monotonic() - started >= max_seconds_per_task
            ):
                break
