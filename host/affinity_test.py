"""CPU pins: checked against the CPUs this process may use, restored after an
in-process run, and a pinned run still decodes every shot."""

from __future__ import annotations

import os

import pytest

from qhil.host import ConfigError, RunConfig, run_loop
from qhil.host._affinity import pinned

needs_affinity = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity"), reason="this OS has no CPU affinity"
)


@needs_affinity
def test_a_cpu_this_process_cannot_use_is_refused_naming_the_choices() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    bad = max(allowed) + 1
    with pytest.raises(ConfigError, match=rf"cpu = {bad} is not a CPU.*choose one of 0"):
        RunConfig().with_overrides({"frontend.cpu": bad})
    with pytest.raises(ConfigError, match=r"\[decoder\] cpu = -2"):
        RunConfig().with_overrides({"decoder.cpu": -2})


@needs_affinity
def test_both_ends_on_one_cpu_is_refused() -> None:
    cpu = min(os.sched_getaffinity(0))
    with pytest.raises(ConfigError, match="would share one CPU"):
        RunConfig().with_overrides({"frontend.cpu": cpu, "decoder.cpu": cpu})
    # with an external decoder the pin is only this process's
    RunConfig().with_overrides({"frontend.cpu": cpu, "decoder.cpu": cpu, "decoder.spawn": False})


@needs_affinity
def test_pinned_restores_the_cpus_it_found() -> None:
    before = os.sched_getaffinity(0)
    cpu = max(before)
    with pinned("frontend", cpu):
        assert os.sched_getaffinity(0) == {cpu}
    assert os.sched_getaffinity(0) == before


@needs_affinity
@pytest.mark.skipif(len(getattr(os, "sched_getaffinity", lambda _: ())(0)) < 2, reason="one CPU")
def test_a_pinned_run_decodes_every_shot_and_leaves_the_caller_unpinned() -> None:
    before = os.sched_getaffinity(0)
    front, dec = sorted(before)[:2]
    cfg = RunConfig().with_overrides(
        {
            "experiment.distance": 3,
            "experiment.rounds": 3,
            "experiment.shots": 300,
            "frontend.cpu": front,
            "decoder.cpu": dec,
        }
    )
    out = run_loop(cfg, progress=False)
    assert out.report.shots_decoded == 300 and not out.report.aborted
    assert out.report.config["frontend"]["cpu"] == front
    assert out.report.config["decoder"]["cpu"] == dec
    assert os.sched_getaffinity(0) == before
