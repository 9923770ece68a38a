"""Circuit-level noise models, inserted moment by moment into noiseless circuits.

Definitions follow Gidney, Newman, Fowler and Broughton, "A fault-tolerant honeycomb
memory" (2021), Table 2:

========================  ===================  =====================================
operation                 SD6 (p)              SI1000 (p)
========================  ===================  =====================================
2-qubit Clifford          DEPOLARIZE2(p)       DEPOLARIZE2(p)
1-qubit Clifford          DEPOLARIZE1(p)       DEPOLARIZE1(p/10)
reset (after)             flip p               flip 2p
measurement (before)      flip p               flip 5p
idle qubit, per moment    DEPOLARIZE1(p)       DEPOLARIZE1(p/10)
idle in a moment with     DEPOLARIZE1(p)       DEPOLARIZE1(2p)
measurements or resets
========================  ===================  =====================================

A "flip" is X_ERROR for Z-basis (and Y-basis) resets/measurements and Z_ERROR for
X-basis ones. MR/MRX get the measurement flip before and the reset flip after. SI1000
was defined for CZ-based circuits; here every 2-qubit Clifford (CX included) gets the
2-qubit channel.

Which convention is behind the PyMatching table of docs/design.md? Measured on
rotated_memory_z, d=5, rounds=5, p=0.003, 200k shots, PyMatching 2 (uncorrelated):

=====================================================  ================  ==========
noise                                                  det. events/shot  LER/shot
=====================================================  ================  ==========
design.md table ("SD6")                                5.1               3.4e-3
stim generated (after_clifford_depolarization,         5.13              3.44e-3
before_round_data_depolarization,
before_measure_flip_probability,
after_reset_flip_probability all = p)
SD6 as defined above (with idle noise)                 7.46              1.22e-2
SI1000 as defined above                                8.99              1.27e-2
=====================================================  ================  ==========

At d=9, rounds=9 stim's noise gives 34.7 events/shot, the table's 34.7 too. So the
table was made with stim's built-in noise, which has no idle noise beyond one
data-qubit depolarization per round. That convention is offered as
``"stim-depolarizing"``; its circuits come from stim's own generator (see
:meth:`NoiseModel.stim_generator_args`) because "data qubit at the start of a round"
is not a property a generic moment walker can see.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import stim

__all__ = ["NOISE_MODELS", "NoiseModel"]

NOISE_MODELS: tuple[str, ...] = ("sd6", "si1000", "stim-depolarizing")

# Gates that are pure annotations or bookkeeping: never noisy, never touch qubits.
_ANNOTATIONS = frozenset(
    {"DETECTOR", "OBSERVABLE_INCLUDE", "QUBIT_COORDS", "SHIFT_COORDS", "MPAD", "TICK"}
)
_X_BASIS = frozenset({"MX", "RX", "MRX"})


@dataclass(frozen=True, kw_only=True)
class NoiseModel:
    """A named circuit-level noise model with one strength parameter ``p``.

    Build one with :meth:`sd6`, :meth:`si1000`, :meth:`stim_depolarizing` or
    :meth:`from_name`; the per-operation probabilities are derived properties.

    >>> NoiseModel.si1000(0.001).measure_flip
    0.005
    >>> NoiseModel.from_name("sd6", 0.002)
    NoiseModel(name='sd6', p=0.002)
    """

    name: str
    p: float

    def __post_init__(self) -> None:
        if self.name not in NOISE_MODELS:
            choices = ", ".join(repr(n) for n in NOISE_MODELS)
            raise ValueError(f"noise model name must be one of {choices}; got {self.name!r}")
        if isinstance(self.p, bool) or not isinstance(self.p, (int, float)):
            raise TypeError(f"p must be a float; got {self.p!r}")
        if not math.isfinite(self.p) or self.p < 0:
            raise ValueError(f"p must be a finite number >= 0; got {self.p!r}")
        object.__setattr__(self, "p", float(self.p))  # sd6(0) and sd6(0.0) compare equal
        worst = max(self.two_qubit, self.one_qubit, self.reset_flip, self.measure_flip)
        worst = max(worst, self.idle, self.idle_during_measure_or_reset)
        if worst > 1:
            raise ValueError(
                f"p={self.p!r} gives a probability {worst!r} > 1 under {self.name!r} noise "
                f"(si1000 needs 5p <= 1, the others p <= 1)"
            )

    @classmethod
    def sd6(cls, p: float) -> NoiseModel:
        """Uniform depolarizing noise (SD6), idle qubits included.

        >>> NoiseModel.sd6(0.001).idle
        0.001
        """
        return cls(name="sd6", p=p)

    @classmethod
    def si1000(cls, p: float) -> NoiseModel:
        """Superconducting-inspired noise (SI1000): cheap 1-qubit gates, slow readout.

        >>> NoiseModel.si1000(0.001).idle_during_measure_or_reset
        0.002
        """
        return cls(name="si1000", p=p)

    @classmethod
    def stim_depolarizing(cls, p: float) -> NoiseModel:
        """Stim's generator noise with all four of its knobs set to ``p``.

        >>> args = NoiseModel.stim_depolarizing(0.003).stim_generator_args()
        >>> args["after_reset_flip_probability"]
        0.003
        """
        return cls(name="stim-depolarizing", p=p)

    @classmethod
    def from_name(cls, name: str, p: float) -> NoiseModel:
        """The model called ``name`` (one of :data:`NOISE_MODELS`) at strength ``p``.

        >>> NoiseModel.from_name("si1000", 0.001).one_qubit
        0.0001
        """
        return cls(name=name, p=p)

    @property
    def two_qubit(self) -> float:
        """DEPOLARIZE2 probability after each 2-qubit Clifford."""
        return self.p

    @property
    def one_qubit(self) -> float:
        """DEPOLARIZE1 probability after each 1-qubit Clifford."""
        return self.p / 10 if self.name == "si1000" else self.p

    @property
    def reset_flip(self) -> float:
        """Flip probability right after each reset."""
        return 2 * self.p if self.name == "si1000" else self.p

    @property
    def measure_flip(self) -> float:
        """Flip probability right before each measurement."""
        return 5 * self.p if self.name == "si1000" else self.p

    @property
    def idle(self) -> float:
        """DEPOLARIZE1 probability on a qubit idle in a moment (0 for stim-depolarizing)."""
        if self.name == "stim-depolarizing":
            return 0.0
        return self.p / 10 if self.name == "si1000" else self.p

    @property
    def idle_during_measure_or_reset(self) -> float:
        """DEPOLARIZE1 probability on a qubit idle in a moment that measures or resets."""
        return 2 * self.p if self.name == "si1000" else self.idle

    def stim_generator_args(self) -> dict[str, float]:
        """Keyword arguments for ``stim.Circuit.generated`` (stim-depolarizing only).

        >>> sorted(NoiseModel.stim_depolarizing(0.01).stim_generator_args())[0]
        'after_clifford_depolarization'
        """
        if self.name != "stim-depolarizing":
            raise ValueError(
                f"stim_generator_args() needs the 'stim-depolarizing' model; got {self.name!r}"
            )
        return {
            "after_clifford_depolarization": self.p,
            "before_round_data_depolarization": self.p,
            "before_measure_flip_probability": self.p,
            "after_reset_flip_probability": self.p,
        }

    def noisy_circuit(self, circuit: stim.Circuit) -> stim.Circuit:
        """Return ``circuit`` with this model's noise inserted moment by moment.

        ``circuit`` must be noiseless. Moments are separated by TICK; REPEAT blocks stay
        REPEAT blocks (an iteration is peeled off where a moment straddles the block's
        edge). Detectors, observables and measurement order are unchanged.

        >>> c = stim.Circuit("R 0 1\\nTICK\\nCX 0 1\\nTICK\\nM 0")
        >>> print(NoiseModel.sd6(0.01).noisy_circuit(c))
        R 0 1
        X_ERROR(0.01) 0 1
        TICK
        CX 0 1
        DEPOLARIZE2(0.01) 0 1
        TICK
        X_ERROR(0.01) 0
        M 0
        DEPOLARIZE1(0.01) 1
        """
        if self.name == "stim-depolarizing":
            raise ValueError(
                "'stim-depolarizing' noise is defined by stim's circuit generator, not per "
                "moment; use memory_circuit(..., noise=...) or stim_generator_args()"
            )
        _check_noiseless(circuit)
        qubits = sorted(_used_qubits(circuit))
        out = stim.Circuit()
        stream = _MomentStream(self, qubits, out)
        stream.feed(circuit)
        stream.flush(tick=False)
        return out


def _check_noiseless(circuit: stim.Circuit) -> None:
    for inst in circuit:
        if isinstance(inst, stim.CircuitRepeatBlock):
            _check_noiseless(inst.body_copy())
            continue
        data = stim.gate_data(inst.name)
        if inst.name in _ANNOTATIONS:
            continue
        flip_args = data.produces_measurements and any(inst.gate_args_copy())  # M(p)
        if (data.is_noisy_gate and not data.produces_measurements) or flip_args:
            raise ValueError(
                f"circuit already contains noise ({inst.name}); pass a noiseless circuit"
            )
        if data.produces_measurements and inst.name not in {"M", "MX", "MY", "MR", "MRX", "MRY"}:
            raise ValueError(
                f"unsupported measurement {inst.name}; supported: M, MX, MY, MR, MRX, MRY"
            )
        if not (data.is_unitary or data.is_reset or data.produces_measurements):
            raise ValueError(f"unsupported instruction {inst.name}")
        if not data.is_single_qubit_gate and not data.is_two_qubit_gate:
            raise ValueError(f"unsupported multi-qubit instruction {inst.name}")
        if any(not t.is_qubit_target for t in inst.targets_copy()):
            raise ValueError(
                f"unsupported non-qubit target in {inst.name} (classical control or inverted "
                f"measurement): {inst}"
            )


def _used_qubits(circuit: stim.Circuit) -> set[int]:
    used: set[int] = set()
    for inst in circuit:
        if isinstance(inst, stim.CircuitRepeatBlock):
            used |= _used_qubits(inst.body_copy())
        elif inst.name not in _ANNOTATIONS:
            used.update(t.value for t in inst.targets_copy())
    return used


def _starts_with_tick(body: stim.Circuit) -> bool:
    for inst in body:
        if isinstance(inst, stim.CircuitRepeatBlock):
            return False
        if inst.name == "TICK":
            return True
        if inst.name not in _ANNOTATIONS:
            return False
    return False


def _ends_with_tick(body: stim.Circuit) -> bool:
    for inst in reversed(body):
        if isinstance(inst, stim.CircuitRepeatBlock):
            return False
        if inst.name == "TICK":
            return True
        if inst.name not in _ANNOTATIONS:
            return False
    return False


class _MomentStream:
    """Buffers one moment of instructions, then writes it out with its noise."""

    def __init__(self, model: NoiseModel, qubits: list[int], out: stim.Circuit) -> None:
        self.model = model
        self.qubits = qubits
        self.out = out
        self.pending = stim.Circuit()
        self.touched: set[int] = set()
        self.measures_or_resets = False

    def feed(self, circuit: Iterable[stim.CircuitInstruction | stim.CircuitRepeatBlock]) -> None:
        for inst in circuit:
            if isinstance(inst, stim.CircuitRepeatBlock):
                self._repeat(inst.body_copy(), inst.repeat_count)
            elif inst.name == "TICK":
                self.flush(tick=True)
            else:
                self._add(inst)

    def _repeat(self, body: stim.Circuit, count: int) -> None:
        # Keep the block only where its edges are moment boundaries; otherwise peel
        # the iteration whose moment leaks into the surrounding circuit.
        starts, ends = _starts_with_tick(body), _ends_with_tick(body)
        if not starts and not ends:
            for _ in range(count):  # moments straddle iterations: no loop survives
                self.feed(body)
            return
        if not starts:  # first iteration's head joins the moment before the block
            self.feed(body)
            count -= 1
        peel_last = not ends
        if peel_last:
            count -= 1
        if count > 0:
            self.flush(tick=False)
            inner = stim.Circuit()
            sub = _MomentStream(self.model, self.qubits, inner)
            sub.feed(body)
            sub.flush(tick=False)
            if count == 1:
                self.out += inner
            else:
                self.out.append(stim.CircuitRepeatBlock(count, inner))
        if peel_last:
            self.feed(body)

    def _add(self, inst: stim.CircuitInstruction) -> None:
        name = inst.name
        if name in _ANNOTATIONS:
            self.pending.append(inst)
            return
        targets = [t.value for t in inst.targets_copy()]
        self.touched.update(targets)
        data = stim.gate_data(name)
        model = self.model
        flip = "Z_ERROR" if name in _X_BASIS else "X_ERROR"
        if data.produces_measurements:
            self.measures_or_resets = True
            _append(self.pending, flip, targets, model.measure_flip)
            self.pending.append(inst)
            if data.is_reset:
                _append(self.pending, flip, targets, model.reset_flip)
        elif data.is_reset:
            self.measures_or_resets = True
            self.pending.append(inst)
            _append(self.pending, flip, targets, model.reset_flip)
        elif data.is_two_qubit_gate:
            self.pending.append(inst)
            _append(self.pending, "DEPOLARIZE2", targets, model.two_qubit)
        else:
            self.pending.append(inst)
            _append(self.pending, "DEPOLARIZE1", targets, model.one_qubit)

    def flush(self, *, tick: bool) -> None:
        if self.touched:  # a moment with no operations idles nobody
            idle = [q for q in self.qubits if q not in self.touched]
            p = (
                self.model.idle_during_measure_or_reset
                if self.measures_or_resets
                else self.model.idle
            )
            _append(self.pending, "DEPOLARIZE1", idle, p)
        self.out += self.pending
        if tick:
            self.out.append("TICK")
        self.pending = stim.Circuit()
        self.touched = set()
        self.measures_or_resets = False


def _append(circuit: stim.Circuit, name: str, targets: list[int], p: float) -> None:
    if p > 0 and targets:
        circuit.append(name, targets, p)
