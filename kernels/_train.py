"""``qhil train``: train the pre-decoder CNN with PyTorch and quantize it to the shipped format.

Data: every batch comes from one randomly drawn setting (distance, basis,
noise model, p), rounds = d. Shots are sampled from the setting's detector
error model with stim, and labelled with the canonical corrections of the
mechanisms that fired (``CanonicalLabels``). Drawing noise models and p from
a range, rather than one point, keeps the model from tuning to one noise model.

Loss: binary cross-entropy on the output entries that name a real error
(``PreDecoderGeometry.output_mask``). The output is binarized at logit 0,
so the network acts only where it judges a correction more likely than not,
and leaves the rest to PyMatching.

Reproducible: the same config and seed give the same weights on the same
machine (seeded sampling, seeded init, deterministic torch, fixed threads).

PyTorch is an optional extra (``pip install 'qhil[train]'``); nothing else
in qhil imports it.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qhil.kernels._model import QuantizedModel

__all__ = ["TrainConfig", "train"]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What ``qhil train`` trains on, and how; every field can be set in a TOML ``[train]``."""

    seed: int = 1
    widths: tuple[int, ...] = (4, 32, 32, 32, 4)
    kernel: int = 3
    distances: tuple[int, ...] = (3, 5, 7)
    bases: tuple[str, ...] = ("x", "z")
    noise_models: tuple[str, ...] = ("stim-depolarizing", "sd6", "si1000")
    p_values: tuple[float, ...] = (0.001, 0.002, 0.003, 0.004, 0.005, 0.006)
    steps: int = 4000
    batch_size: int = 256
    lr: float = 2e-3
    weight_bits: int = 8
    act_bits: int = 6
    threads: int = 2

    def __post_init__(self) -> None:
        from qhil.sim import BASES, NOISE_MODELS

        if self.widths[0] != 4 or self.widths[-1] != 4 or len(self.widths) < 2:
            raise ValueError(f"widths must start and end with 4 (channels); got {self.widths}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd and >= 1; got {self.kernel}")
        if not self.distances or any(d < 3 or d % 2 == 0 for d in self.distances):
            raise ValueError(f"distances must be odd and >= 3; got {self.distances}")
        if bad := [b for b in self.bases if b not in BASES]:
            raise ValueError(f"unknown bases {bad}; choose from {BASES}")
        if bad := [n for n in self.noise_models if n not in NOISE_MODELS]:
            raise ValueError(f"unknown noise models {bad}; choose from {NOISE_MODELS}")
        if not self.p_values or any(not 0 < p < 0.1 for p in self.p_values):
            raise ValueError(f"p_values must be in (0, 0.1); got {self.p_values}")
        if min(self.steps, self.batch_size, self.threads) < 1 or self.lr <= 0:
            raise ValueError("steps, batch_size and threads must be >= 1 and lr > 0")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"training config {str(p)!r} does not exist")
        data = tomllib.loads(p.read_text()).get("train", {})
        fields = {f.name for f in dataclasses.fields(cls)}
        if bad := sorted(set(data) - fields):
            raise ValueError(f"{p}: [train] has unknown keys {bad}; valid keys: {sorted(fields)}")
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**values)


def _net(config: TrainConfig) -> Any:
    import torch

    layers: list[Any] = []
    widths = config.widths
    for i, (c_in, c_out) in enumerate(itertools.pairwise(widths)):
        layers.append(torch.nn.Conv3d(c_in, c_out, config.kernel, padding=config.kernel // 2))
        if i < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def quantize(net: Any, config: TrainConfig, meta: dict[str, Any]) -> QuantizedModel:
    """The trained float network as the shipped integer model."""
    convs = [m for m in net if m.__class__.__name__ == "Conv3d"]
    wb, ab = config.weight_bits, config.act_bits
    weights = tuple(
        np.round(c.weight.detach().double().numpy() * 2**wb).astype(np.int32) for c in convs
    )
    biases = tuple(
        np.round(c.bias.detach().double().numpy() * 2 ** (wb + ab)).astype(np.int64) for c in convs
    )
    return QuantizedModel(weights, biases, wb, ab, meta)


class _Settings:
    """Lazily built labellers for each (distance, basis, noise, p) setting."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self._cache: dict[tuple[Any, ...], Any] = {}

    def get(self, key: tuple[int, str, str, float]) -> Any:
        if key not in self._cache:
            from qhil.kernels._labels import CanonicalLabels
            from qhil.sim import NoiseModel, memory_circuit

            d, basis, noise, p = key
            circuit = memory_circuit(distance=d, rounds=d, basis=basis,
                                     noise=NoiseModel.from_name(noise, p))  # fmt: skip
            self._cache[key] = CanonicalLabels.from_circuit(circuit)
        return self._cache[key]


def train(
    config: TrainConfig,
    *,
    log_path: Path | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> QuantizedModel:
    """Train from scratch and return the quantized model (its ``meta`` records the run)."""
    try:
        import torch
    except ImportError:
        raise RuntimeError(
            "qhil train needs PyTorch: pip install 'qhil[train]' (CPU is enough)"
        ) from None
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(config.seed)
    net = _net(config)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.steps, eta_min=config.lr / 20)
    settings = _Settings(config)
    log_file = open(log_path, "w", newline="") if log_path else None
    writer = csv.writer(log_file) if log_file else None
    if writer:
        writer.writerow(["step", "loss", "distance", "basis", "noise", "p", "seconds"])
    t0 = time.monotonic()
    loss_ema = 0.0
    try:
        for step in range(config.steps):
            key = (
                int(rng.choice(config.distances)), str(rng.choice(config.bases)),
                str(rng.choice(config.noise_models)), float(rng.choice(config.p_values)),
            )  # fmt: skip
            labeller = settings.get(key)
            dets, labels, _ = labeller.sample(config.batch_size, seed=int(rng.integers(2**62)))
            geometry = labeller.geometry
            x = torch.from_numpy(geometry.inputs(dets).astype(np.float32))
            y = torch.from_numpy(labels.astype(np.float32))
            mask = torch.from_numpy(geometry.output_mask.astype(np.float32))
            logits = net(x)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, weight=mask,
                                                                       reduction="sum")  # fmt: skip
            loss = loss / (mask.sum() * config.batch_size)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            value = loss.item()
            loss_ema = value if step == 0 else 0.98 * loss_ema + 0.02 * value
            if writer and (step % 20 == 0 or step == config.steps - 1):
                writer.writerow([step, f"{value:.6g}", *key, f"{time.monotonic() - t0:.1f}"])
                log_file.flush()  # type: ignore[union-attr]
            if on_step is not None:
                on_step(step, loss_ema)
    finally:
        if log_file:
            log_file.close()
    meta = {
        "architecture": f"3D CNN, widths {list(config.widths)}, {config.kernel}^3 kernels, "
        "same padding, ReLU",
        "training": dataclasses.asdict(config),
        "train_seconds": round(time.monotonic() - t0, 1),
        "final_loss_ema": loss_ema,
        "torch": torch.__version__,
    }
    model = quantize(net.eval(), config, meta)
    model.meta["quantization_agreement"] = _agreement(net, model, settings, rng)
    model.meta["parameters"] = model.parameter_count
    model.meta["receptive_field"] = model.receptive_field
    return model


def _agreement(net: Any, model: QuantizedModel, settings: _Settings, rng: Any) -> float:
    """Fraction of masked outputs where the float and the integer model agree."""
    import torch

    from qhil.kernels._model import reference_logits

    labeller = settings.get(next(iter(settings._cache)))
    dets, _, _ = labeller.sample(64, seed=int(rng.integers(2**62)))
    x = labeller.geometry.inputs(dets)
    with torch.no_grad():
        float_out = net(torch.from_numpy(x.astype(np.float32))).numpy() > 0
    int_out = reference_logits(x, model) > 0
    mask = np.broadcast_to(labeller.geometry.output_mask, int_out.shape)
    return float(np.mean(float_out[mask] == int_out[mask]))


def write_model(model: QuantizedModel, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    model.save(tmp)
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(model.meta, indent=2) + "\n")
