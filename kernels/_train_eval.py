"""Checkpoint selection for ``qhil train``: a fixed validation set, scored by logical errors.

Training keeps the checkpoint that makes the fewest logical errors as
pre-decoder + uncorrelated PyMatching on a validation set drawn once, from
seeds training never uses. The same shots are decoded by PyMatching alone, so
``pre+PM - PM`` is a paired difference: far less noisy than two separate error
rates, and the number that says whether the pre-decoder helps or hurts.

Validation settings are the larger distances of the config (d >= 5), each in
both bases, at the config's highest p (where fault pairs, the pre-decoder's
hard case, are common), with the noise models taken in turn.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ValidationSet", "plot_training"]

_VAL_SEED = 2**40  # far from the seeds training draws (below 2**62, from its own rng)


@dataclasses.dataclass(frozen=True, eq=False)
class _Split:
    """One validation setting: its shots, and PyMatching's errors on them."""

    name: str
    geometry: Any
    matching: Any
    inputs: np.ndarray  # float32[shots, 4, T, d, d]
    dets: np.ndarray  # bool[shots, num_detectors]
    obs: np.ndarray  # bool[shots, 1]
    pm_errors: int


@dataclasses.dataclass(frozen=True, eq=False)
class ValidationSet:
    """Fixed validation shots for checkpoint selection; build it with :meth:`for_config`."""

    splits: tuple[_Split, ...]

    @classmethod
    def for_config(cls, config: Any, *, shots: int) -> ValidationSet:
        import pymatching

        from qhil.kernels._geometry import PreDecoderGeometry
        from qhil.sim import NoiseModel, memory_circuit

        distances = [d for d in config.distances if d >= 5] or [max(config.distances)]
        p = max(config.p_values)
        splits = []
        for i, (d, basis) in enumerate((d, b) for d in distances for b in config.bases):
            noise = config.noise_models[i % len(config.noise_models)]
            circuit = memory_circuit(distance=d, rounds=d, basis=basis,
                                     noise=NoiseModel.from_name(noise, p))  # fmt: skip
            dem = circuit.detector_error_model(decompose_errors=True)
            matching = pymatching.Matching.from_detector_error_model(dem)
            dets, obs = circuit.compile_detector_sampler(seed=_VAL_SEED + i).sample(
                shots, separate_observables=True
            )
            geometry = PreDecoderGeometry.from_circuit(circuit)
            pm = matching.decode_batch(dets).astype(bool)
            splits.append(
                _Split(
                    name=f"{noise}:{basis}:d{d}:p{p}",
                    geometry=geometry,
                    matching=matching,
                    inputs=geometry.inputs(dets).astype(np.float32),
                    dets=dets,
                    obs=obs,
                    pm_errors=int(np.any(pm != obs, axis=1).sum()),
                )
            )
        return cls(tuple(splits))

    @property
    def shots(self) -> int:
        return sum(s.dets.shape[0] for s in self.splits)

    @property
    def pm_errors(self) -> int:
        return sum(s.pm_errors for s in self.splits)

    def errors(self, net: Any, *, device: Any, batch: int = 512) -> dict[str, int]:
        """Logical errors of the float network + uncorrelated PyMatching, per split and total."""
        import torch

        out: dict[str, int] = {}
        with torch.no_grad():
            for s in self.splits:
                e = np.concatenate(
                    [
                        net(torch.from_numpy(s.inputs[lo : lo + batch]).to(device)).cpu().numpy()
                        > 0
                        for lo in range(0, s.inputs.shape[0], batch)
                    ]
                )
                flips, obs_flip = s.geometry.footprint(e)
                pred = obs_flip ^ s.matching.decode_batch(s.dets ^ flips).astype(bool)
                out[s.name] = int(np.any(pred != s.obs, axis=1).sum())
        out["total"] = sum(out.values())
        return out


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
