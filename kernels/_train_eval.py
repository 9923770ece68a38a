"""Checkpoint selection for ``qhil train``: a fixed validation set, scored by logical errors.

Training keeps the checkpoint that makes the fewest logical errors as
pre-decoder + uncorrelated PyMatching on a validation set drawn once, from
seeds training never uses. The same shots are decoded by PyMatching alone, so
``pre+PM - PM`` is a paired difference: far less noisy than two separate error
rates, and the number that says whether the pre-decoder helps or hurts.

Validation settings are the larger distances of the config (d >= 5), each in
both bases, at the config's highest p (where fault pairs, the pre-decoder's
hard case, are common), with the noise models taken in turn.

Calibrated abstention: after training, ``calibrate`` picks the default
threshold of the shipped model on a second, larger set of fresh shots: the
smallest logit threshold at which pre-decoder + PyMatching makes no more
logical errors than PyMatching alone on the same shots, at the config's middle
and highest p separately. Below the threshold
the network abstains and PyMatching sees those events untouched.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["STIM_PROFILES", "THRESHOLDS", "ValidationSet", "plot_training"]

# Logit thresholds ``calibrate`` tries, in order; at 16 the network almost never acts.
THRESHOLDS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0, 11.0, 16.0)
_VAL_SEED = 2**40  # far from the seeds training draws (below 2**62, from its own rng)

# Noise shapes of stim's generated circuits used in calibration only, as multiples of p
# for its knobs; the never-worse test checks yet other shapes.
STIM_PROFILES: dict[str, dict[str, float]] = {
    "gate-heavy": {"after_clifford_depolarization": 1.0, "before_measure_flip_probability": 0.2,
                   "after_reset_flip_probability": 0.2},
    "readout-heavy": {"after_clifford_depolarization": 0.25,
                      "before_measure_flip_probability": 2.0,
                      "after_reset_flip_probability": 2.0},
    "idle-heavy": {"after_clifford_depolarization": 0.5, "before_measure_flip_probability": 0.5,
                   "after_reset_flip_probability": 0.5,
                   "before_round_data_depolarization": 2.0},
}  # fmt: skip


@dataclasses.dataclass(frozen=True, eq=False)
class _Split:
    """One validation setting: its shots, and PyMatching's errors on them."""

    name: str
    group: str  # calibration holds each group to the baseline separately
    circuit: Any
    geometry: Any
    matching: Any  # built with correlations: decodes both ways
    inputs: np.ndarray  # float32[shots, 4, T, d, d]
    dets: np.ndarray  # bool[shots, num_detectors]
    obs: np.ndarray  # bool[shots, 1]
    pm_errors: int
    pm_corr_errors: int

    def decode(self, dets: np.ndarray, *, correlated: bool) -> np.ndarray:
        return self.matching.decode_batch(dets, enable_correlations=correlated).astype(bool)


def _distances(config: Any) -> list[int]:
    """The validation distances of a ``TrainConfig``: its d >= 5, else its largest."""
    return [d for d in config.distances if d >= 5] or [max(config.distances)]


def _split(name: str, group: str, circuit: Any, shots: int, seed: int) -> _Split:
    import pymatching

    from qhil.kernels._geometry import PreDecoderGeometry

    dem = circuit.detector_error_model(decompose_errors=True)
    matching = pymatching.Matching.from_detector_error_model(dem, enable_correlations=True)
    dets, obs = circuit.compile_detector_sampler(seed=seed).sample(shots, separate_observables=True)
    geometry = PreDecoderGeometry.from_circuit(circuit)
    pm = matching.decode_batch(dets).astype(bool)
    pm_corr = matching.decode_batch(dets, enable_correlations=True).astype(bool)
    return _Split(
        name=name,
        group=group,
        circuit=circuit,
        geometry=geometry,
        matching=matching,
        inputs=geometry.inputs(dets).astype(np.float32),
        dets=dets,
        obs=obs,
        pm_errors=int(np.any(pm != obs, axis=1).sum()),
        pm_corr_errors=int(np.any(pm_corr != obs, axis=1).sum()),
    )


@dataclasses.dataclass(frozen=True, eq=False)
class ValidationSet:
    """Fixed validation shots for checkpoint selection; build it with :meth:`for_config`."""

    splits: tuple[_Split, ...]

    @classmethod
    def for_config(
        cls,
        config: Any,
        *,
        shots: int,
        seed: int = _VAL_SEED,
        ps: tuple[float, ...] | None = None,
    ) -> ValidationSet:
        """Validation shots for ``config`` (a ``TrainConfig``), ``shots`` per setting.

        ``ps``: the physical error rates to draw settings at (default: the
        config's highest).
        """
        from qhil.sim import NoiseModel, memory_circuit

        combos = [(p, d, b) for p in (ps or (max(config.p_values),)) for d in _distances(config)
                  for b in config.bases]  # fmt: skip
        splits = []
        for i, (p, d, basis) in enumerate(combos):
            noise = config.noise_models[i % len(config.noise_models)]
            circuit = memory_circuit(distance=d, rounds=d, basis=basis,
                                     noise=NoiseModel.from_name(noise, p))  # fmt: skip
            splits.append(_split(f"{noise}:{basis}:d{d}:p{p}", f"p{p}", circuit, shots, seed + i))
        return cls(tuple(splits))

    @classmethod
    def stim_profiles(cls, config: Any, *, p: float, shots: int, seed: int) -> ValidationSet:
        """Shots of stim's generated memory circuits under ``STIM_PROFILES`` noise.

        At the same distances as :meth:`for_config`, both bases, ``shots`` each.

        None of these noise shapes is one the model trains on; calibrating on
        them as well keeps the thresholds from fitting the training noise only.
        """
        import stim

        splits = []
        i = 0
        for name, knobs in STIM_PROFILES.items():
            for d in _distances(config):
                for basis in ("x", "z"):
                    circuit = stim.Circuit.generated(
                        f"surface_code:rotated_memory_{basis}", distance=d, rounds=d,
                        **{k: v * p for k, v in knobs.items()},
                    )  # fmt: skip
                    split = _split(f"stim-{name}:{basis}:d{d}:p{p}", f"stim-{name}", circuit,
                                   shots, seed + i)  # fmt: skip
                    splits.append(split)
                    i += 1
        return cls(tuple(splits))

    def __add__(self, other: ValidationSet) -> ValidationSet:
        return ValidationSet(self.splits + other.splits)

    @property
    def shots(self) -> int:
        return sum(s.dets.shape[0] for s in self.splits)

    @property
    def pm_errors(self) -> int:
        return sum(s.pm_errors for s in self.splits)

    def logits(self, net: Any, *, device: Any, batch: int = 512) -> list[np.ndarray]:
        """The float network's logits on each split: float32[shots, 4, T, d, d]."""
        import torch

        with torch.no_grad():
            return [
                np.concatenate([
                    net(torch.from_numpy(s.inputs[lo : lo + batch]).to(device)).cpu().numpy()
                    for lo in range(0, s.inputs.shape[0], batch)
                ])
                for s in self.splits
            ]  # fmt: skip

    def _score(
        self, logits: list[np.ndarray], threshold: float, matchers: tuple[bool, ...]
    ) -> tuple[dict[bool, dict[str, int]], int]:
        """Errors per split name for each matcher (True: correlated), and events left.

        One footprint per split serves every matcher.
        """
        errors: dict[bool, dict[str, int]] = {m: {} for m in matchers}
        left = 0
        for s, lg in zip(self.splits, logits, strict=True):
            flips, obs_flip = s.geometry.footprint(lg > threshold)
            residual = s.dets ^ flips
            left += int(residual.sum())
            for m in matchers:
                pred = obs_flip ^ s.decode(residual, correlated=m)
                errors[m][s.name] = int(np.any(pred != s.obs, axis=1).sum())
        return errors, left

    def errors(self, net: Any, *, device: Any) -> dict[str, int]:
        """Logical errors of the float network + uncorrelated PyMatching, per split and total."""
        out = self._score(self.logits(net, device=device), 0.0, (False,))[0][False]
        out["total"] = sum(out.values())
        return out

    def calibrate(self, model: Any, *, backend: str = "auto") -> dict[str, dict[str, Any]]:
        """Per matcher, the smallest threshold of ``THRESHOLDS`` that errs no more than it alone.

        Pre-decoder + PyMatching is held to PyMatching alone ("pymatching"), and
        pre-decoder + correlated PyMatching to correlated PyMatching alone
        ("pymatching-correlated"). Scored with the integer ``model`` (a
        ``QuantizedModel``), as shipped, from one inference per split, and
        required in every group of the set separately: each physical error rate
        of the config's noise models, and each stim noise profile (the
        pre-decoder's harm, relative to PyMatching, is largest at low p and on
        noise it did not train on).

        Returns, per matcher, ``{"threshold", "shots", "baseline_errors",
        "tried"}``: the threshold (the largest one if none qualifies), the
        baseline's errors per group ("p0.004": n, "stim-gate-heavy": n), and,
        per threshold tried, its errors per group and the detection events left
        per shot.
        """
        from qhil.kernels._predecoder import PreDecoder

        scale = 2.0 ** (model.weight_bits + model.act_bits)
        logits = []
        for s in self.splits:
            pd = PreDecoder.for_circuit(s.circuit, model=model, backend=backend, threshold=0.0)
            logits.append(pd.logits(s.dets) / scale)
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(self.splits):
            groups.setdefault(s.group, []).append(i)
        names = {False: "pymatching", True: "pymatching-correlated"}
        out: dict[bool, dict[str, Any]] = {}
        for m in names:
            base = {
                g: sum(self.splits[i].pm_corr_errors if m else self.splits[i].pm_errors
                       for i in idx)
                for g, idx in groups.items()
            }  # fmt: skip
            out[m] = {"threshold": THRESHOLDS[-1], "shots": self.shots,
                      "baseline_errors": base, "tried": []}  # fmt: skip
        open_ = [False, True]
        for tau in THRESHOLDS:
            if not open_:
                break
            per_split, left = self._score(logits, tau, tuple(open_))
            for m in list(open_):
                errors = {g: sum(per_split[m][self.splits[i].name] for i in idx)
                          for g, idx in groups.items()}  # fmt: skip
                out[m]["tried"].append(
                    {"threshold": tau, "errors": errors, "events_left": left / self.shots}
                )
                if all(errors[g] <= out[m]["baseline_errors"][g] for g in groups):
                    out[m]["threshold"] = tau
                    open_.remove(m)
        return {names[m]: out[m] for m in names}


def plot_training(model: Any, log_path: Path, png_path: Path) -> None:
    """Plot a trained model's loss log and validation history to a PNG.

    Args:
        model: the ``QuantizedModel`` ``train`` returned (its ``meta`` holds the
            validation history and the kept step).
        log_path: the CSV loss log ``train`` wrote.
        png_path: where to write the plot.
    """
    import csv

    with open(log_path, newline="") as f:
        rows = [{"step": float(r["step"]), "loss": float(r["loss"])} for r in csv.DictReader(f)]
    val = model.meta["validation"]
    history, pm_errors = val["history"], val["pymatching_errors"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=0.6, color="tab:blue")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (BCE per output entry)")
    ax_loss.grid(alpha=0.3)
    ax_val.plot([h["step"] for h in history], [h["total"] for h in history], "o-",
                label="pre-decoder + PyMatching")  # fmt: skip
    ax_val.axhline(pm_errors, color="k", ls="--", label="PyMatching alone")
    kept = [h for h in history if h["step"] == model.meta["kept_step"]]
    ax_val.plot([h["step"] for h in kept], [h["total"] for h in kept], "*", ms=14,
                color="tab:red", label=f"kept: step {model.meta['kept_step']}")  # fmt: skip
    ax_val.set_xlabel("step")
    ax_val.set_ylabel("validation logical errors")
    ax_val.legend()
    ax_val.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
