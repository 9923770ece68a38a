"""Rotated surface-code memory experiments, noiseless or with a :class:`NoiseModel`."""

from __future__ import annotations

import stim

from ._noise import NoiseModel

__all__ = ["BASES", "memory_circuit"]

BASES: tuple[str, ...] = ("x", "z")


def memory_circuit(
    *, distance: int, rounds: int, basis: str = "z", noise: NoiseModel | None = None
) -> stim.Circuit:
    """A rotated surface-code memory experiment in ``basis``.

    The noiseless circuit is stim's ``surface_code:rotated_memory_{basis}``; ``noise``
    is then inserted by :meth:`NoiseModel.noisy_circuit` (or, for the
    ``"stim-depolarizing"`` model, by stim's generator itself). ``rounds`` stabilizer
    rounds are followed by a transversal data-qubit measurement in ``basis``; there is
    one observable, the logical operator of ``basis``.

    >>> c = memory_circuit(distance=3, rounds=2, noise=NoiseModel.sd6(0.001))
    >>> c.num_detectors, c.num_observables
    (16, 1)
    >>> memory_circuit(distance=3, rounds=3, basis="x").num_detectors
    24
    """
    if isinstance(distance, bool) or not isinstance(distance, int):
        raise TypeError(f"distance must be an int; got {distance!r}")
    if distance < 3 or distance % 2 == 0:
        raise ValueError(f"distance must be an odd integer >= 3; got {distance}")
    if isinstance(rounds, bool) or not isinstance(rounds, int):
        raise TypeError(f"rounds must be an int; got {rounds!r}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1; got {rounds}")
    if basis not in BASES:
        raise ValueError(f"basis must be one of 'x', 'z'; got {basis!r}")
    if noise is not None and not isinstance(noise, NoiseModel):
        raise TypeError(f"noise must be a NoiseModel or None; got {noise!r}")

    task = f"surface_code:rotated_memory_{basis}"
    if noise is not None and noise.name == "stim-depolarizing":
        return stim.Circuit.generated(
            task, distance=distance, rounds=rounds, **noise.stim_generator_args()
        )
    circuit = stim.Circuit.generated(task, distance=distance, rounds=rounds)
    return circuit if noise is None else noise.noisy_circuit(circuit)
