"""``qhil train``: train the pre-decoder CNN with PyTorch and quantize it to the shipped format.

Data: every batch comes from one randomly drawn setting (distance, basis,
noise model, p), rounds = d, sampled from the setting's detector error model
with stim. Drawing noise models and p from a range, rather than one point,
keeps the model from tuning to one noise model.

Labels (``labels``): ``"teacher"`` (the default) labels each syndrome with
correlated PyMatching's correction (``TeacherLabels``): one deterministic
answer per syndrome. ``"canonical"`` is the XOR of the canonical corrections
of the mechanisms that fired (``CanonicalLabels``), which gives the same
syndrome different labels when different faults caused it.

Loss: binary cross-entropy on the output entries that name a real error
(``PreDecoderGeometry.output_mask``), per shot and per a fixed number of
entries, so every entry weighs the same in every setting. The output is
binarized at logit 0.

Selection and resuming: every ``val_every`` steps the network is scored on a
fixed validation set (``ValidationSet``: logical errors of pre-decoder +
PyMatching, paired with PyMatching alone on the same shots), and the best
checkpoint is the one shipped. Every ``checkpoint_every`` steps the whole run
(weights, optimizer, schedule, sampling rng, validation history) is saved; a
run cut off resumes from there and ends with the same weights.

Reproducible: the same config and seed give the same weights on the same
machine (seeded sampling, seeded init, deterministic torch, fixed threads).
A CUDA GPU is used when PyTorch sees one.

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
from qhil.kernels._train_eval import ValidationSet

__all__ = ["LABELS", "TrainConfig", "calibrate", "train", "write_model"]

LABELS = ("teacher", "canonical")
_REF_ENTRIES = 1000  # the loss is per shot and per this many output entries
_CAL_SEED = 2**41  # calibration shots: apart from training's and validation's seeds
_LOG_HEADER = ("step", "loss", "distance", "basis", "noise", "p", "seconds", "val_errors")

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
    labels: str = "teacher"
    val_every: int = 500
    val_shots: int = 2000
    checkpoint_every: int = 250
    calibration_shots: int = 10000

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
        if self.labels not in LABELS:
            raise ValueError(f"labels must be one of {LABELS}; got {self.labels!r}")
        if min(self.val_every, self.val_shots, self.checkpoint_every, self.calibration_shots) < 1:
            raise ValueError(
                "val_every, val_shots, checkpoint_every and calibration_shots must be >= 1"
            )

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
            from qhil.kernels._teacher import TeacherLabels
            from qhil.sim import NoiseModel, memory_circuit

            d, basis, noise, p = key
            circuit = memory_circuit(distance=d, rounds=d, basis=basis,
                                     noise=NoiseModel.from_name(noise, p))  # fmt: skip
            kind = TeacherLabels if self.config.labels == "teacher" else CanonicalLabels
            self._cache[key] = kind.from_circuit(circuit)
        return self._cache[key]


@dataclasses.dataclass
class _State:
    """Everything a resumed run needs besides the torch objects."""

    step: int = 0
    loss_ema: float = 0.0
    seconds: float = 0.0
    history: list[dict[str, int]] = dataclasses.field(default_factory=list)
    best: dict[str, Any] | None = None  # the kept weights (state dict), by validation errors


def _device() -> Any:
    import os

    import torch

    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        return torch.device("cuda")
    return torch.device("cpu")


def _save_checkpoint(path: Path, config: TrainConfig, objs: dict[str, Any], state: _State,
                     rng: np.random.Generator) -> None:  # fmt: skip
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {
            "config": dataclasses.asdict(config),
            **{k: v.state_dict() for k, v in objs.items()},
            "state": dataclasses.asdict(state),
            "rng": rng.bit_generator.state,
        },
        tmp,
    )
    tmp.replace(path)  # atomic: a cut-off run never leaves half a checkpoint


def _load_checkpoint(path: Path, config: TrainConfig, objs: dict[str, Any],
                     rng: np.random.Generator) -> _State:  # fmt: skip
    import torch

    try:
        ckpt = torch.load(path, map_location=next(objs["net"].parameters()).device,
                          weights_only=False)  # fmt: skip
    except Exception as exc:
        raise ValueError(
            f"cannot read the training checkpoint {path} ({exc}); delete it to start afresh"
        ) from None
    if ckpt.get("config") != dataclasses.asdict(config):
        raise ValueError(
            f"the checkpoint {path} was written by a different training config; delete it to "
            "start afresh, or train with the config that wrote it"
        )
    for k, v in objs.items():
        v.load_state_dict(ckpt[k])
    rng.bit_generator.state = ckpt["rng"]
    return _State(**ckpt["state"])


def _batch_loss(net: Any, labeller: Any, config: TrainConfig, seed: int, device: Any) -> Any:
    """BCE summed over real output entries, per shot and per reference entry count.

    Dividing by a constant rather than by this batch's entries makes every
    entry weigh the same, whatever the setting: a d=3 batch (almost all
    boundary) no longer weighs as much as a d=7 one, which has 4x the entries.
    """
    import torch

    dets, labels, _ = labeller.sample(config.batch_size, seed=seed)
    geometry = labeller.geometry
    x = torch.from_numpy(geometry.inputs(dets).astype(np.float32)).to(device)
    y = torch.from_numpy(labels.astype(np.float32)).to(device)
    mask = torch.from_numpy(geometry.output_mask.astype(np.float32)).to(device)
    logits = net(x)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, weight=mask,
                                                               reduction="sum")  # fmt: skip
    return loss / (config.batch_size * _REF_ENTRIES)


def _open_log(log_path: Path | None, resume_step: int) -> tuple[Any, Any]:
    """The CSV loss log, keeping the rows before ``resume_step`` of a resumed run."""
    if log_path is None:
        return None, None
    kept: list[str] = []
    if resume_step and log_path.is_file():
        lines = log_path.read_text().splitlines()
        kept = [ln for ln in lines[1:] if ln and int(ln.split(",")[0]) < resume_step]
    log_file = open(log_path, "w", newline="")
    writer = csv.writer(log_file)
    writer.writerow(_LOG_HEADER)
    for ln in kept:
        log_file.write(ln + "\n")
    log_file.flush()
    return log_file, writer


def train(
    config: TrainConfig,
    *,
    log_path: Path | None = None,
    checkpoint_path: Path | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> QuantizedModel:
    """Train and return the quantized model (its ``meta`` records the run).

    Args:
        config: what to train on and how.
        log_path: CSV of the loss every 20 steps and the validation errors.
        checkpoint_path: where to save the run every ``config.checkpoint_every``
            steps; if the file exists (same config), training resumes from it and
            ends with the weights an uninterrupted run would have.
        on_step: called as ``on_step(step, loss_ema)`` after every step.
    """
    try:
        import torch
    except ImportError:
        raise RuntimeError(
            "qhil train needs PyTorch: pip install 'qhil[train]' (CPU is enough)"
        ) from None
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True)
    device = _device()
    rng = np.random.default_rng(config.seed)
    net = _net(config).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.steps, eta_min=config.lr / 20)
    objs = {"net": net, "opt": opt, "sched": sched}
    state = _State()
    if checkpoint_path is not None and checkpoint_path.is_file():
        state = _load_checkpoint(checkpoint_path, config, objs, rng)
    settings = _Settings(config)
    validation = ValidationSet.for_config(config, shots=config.val_shots)
    log_file, writer = _open_log(log_path, state.step)
    t0 = time.monotonic() - state.seconds
    try:
        while state.step < config.steps:
            step = state.step
            key = (
                int(rng.choice(config.distances)), str(rng.choice(config.bases)),
                str(rng.choice(config.noise_models)), float(rng.choice(config.p_values)),
            )  # fmt: skip
            loss = _batch_loss(net, settings.get(key), config, int(rng.integers(2**62)), device)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            value = loss.item()
            state.loss_ema = value if step == 0 else 0.98 * state.loss_ema + 0.02 * value
            state.step = step + 1
            val = ""
            if state.step % config.val_every == 0 or state.step == config.steps:
                val = _validate(net, validation, state, device)
            if writer and (step % 20 == 0 or val):
                writer.writerow([step, f"{value:.6g}", *key, f"{time.monotonic() - t0:.1f}", val])
                log_file.flush()
            state.seconds = time.monotonic() - t0
            if checkpoint_path is not None and (
                state.step % config.checkpoint_every == 0 or state.step == config.steps
            ):
                _save_checkpoint(checkpoint_path, config, objs, state, rng)
            if on_step is not None:
                on_step(step, state.loss_ema)
    finally:
        if log_file:
            log_file.close()
    return _finish(net, config, state, validation, settings, rng)


def _validate(net: Any, validation: ValidationSet, state: _State, device: Any) -> str:
    """Score the network on the validation set; keep its weights if they are the best yet."""
    net.eval()
    errors = validation.errors(net, device=device)
    net.train()
    state.history.append({"step": state.step, **errors})
    if state.best is None or errors["total"] <= state.best["total"]:
        weights = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        state.best = {"step": state.step, "total": errors["total"], "weights": weights}
    return str(errors["total"])


def _finish(net: Any, config: TrainConfig, state: _State, validation: ValidationSet,
            settings: _Settings, rng: np.random.Generator) -> QuantizedModel:  # fmt: skip
    import torch

    assert state.best is not None  # the last step always validates
    net = net.cpu()
    net.load_state_dict(state.best["weights"])
    meta = {
        "architecture": f"3D CNN, widths {list(config.widths)}, {config.kernel}^3 kernels, "
        "same padding, ReLU",
        "training": dataclasses.asdict(config),
        "train_seconds": round(state.seconds, 1),
        "final_loss_ema": state.loss_ema,
        "torch": torch.__version__,
        "kept_step": state.best["step"],
        "validation": {
            "shots": validation.shots,
            "pymatching_errors": validation.pm_errors,
            "history": state.history,
        },
    }
    model = quantize(net.eval(), config, meta)
    model.meta["quantization_agreement"] = _agreement(net, model, settings, rng)
    model.meta["parameters"] = model.parameter_count
    model.meta["receptive_field"] = model.receptive_field
    calibrate(model, config)
    return model


def calibrate(model: QuantizedModel, config: TrainConfig) -> None:
    """Set the model's default thresholds by calibrated abstention on fresh shots.

    ``meta["threshold"]`` keeps pre-decoder + PyMatching no worse than
    PyMatching alone; ``meta["threshold_correlated"]`` keeps the pipeline
    (pre-decoder + correlated PyMatching) no worse than correlated PyMatching
    alone. The set is ``ValidationSet.for_config`` at the config's middle and
    highest p, plus stim's generated circuits under the ``STIM_PROFILES`` noise
    shapes at the middle p, with ``config.calibration_shots`` per setting from
    seeds of their own (not the checkpoint-selection set); each group must
    pass on its own. What was tried goes to ``meta["calibration"]``.
    """
    ps = sorted(config.p_values)
    mid, n = ps[len(ps) // 2], config.calibration_shots
    cal = ValidationSet.for_config(
        config, shots=n, seed=_CAL_SEED, ps=tuple(sorted({mid, ps[-1]}))
    ) + ValidationSet.stim_profiles(config, p=mid, shots=n, seed=_CAL_SEED + 1000)
    model.meta["calibration"] = cal.calibrate(model)
    model.meta["threshold"] = model.meta["calibration"]["pymatching"]["threshold"]
    model.meta["threshold_correlated"] = model.meta["calibration"]["pymatching-correlated"][
        "threshold"
    ]


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
