"""The compiled ping-pong floor: both implementations run and return one sample per
round trip; bad arguments are refused naming the choices. No timing is asserted."""

from __future__ import annotations

import shutil

import pytest

from qhil.bridge import FLOOR_METHODS, floor_round_trips


@pytest.mark.parametrize("method", FLOOR_METHODS)
def test_each_method_returns_one_positive_sample_per_round_trip(method: str) -> None:
    if method == "c" and shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) here")
    floor = floor_round_trips(300, warmup=30, method=method)
    assert floor.method == method and floor.detail
    assert floor.round_trip_ns.shape == (300,) and (floor.round_trip_ns > 0).all()


def test_bad_arguments_are_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        floor_round_trips(10, method="asm")
    with pytest.raises(ValueError, match="n >= 1"):
        floor_round_trips(0)


def test_a_missing_compiler_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "qhil-no-such-compiler")
    with pytest.raises(RuntimeError, match="no C compiler"):
        floor_round_trips(10, method="c")
    assert floor_round_trips(20, warmup=0).method == "numba"  # the fallback
