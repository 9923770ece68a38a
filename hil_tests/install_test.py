"""A normal (non-editable) install exposes qhil.<folder> and nothing bare like `host` or `sim`."""

from __future__ import annotations

import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("host", "fpga", "bridge", "kernels", "sim")


@pytest.mark.slow
def test_wheel_installs_qhil_namespace_only(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = (tmp_path / "dist").glob("qhil-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"qhil"}, f"the wheel installs top-level {sorted(tops)}"
    for folder in FOLDERS:
        assert f"qhil/{folder}/__init__.py" in names
    assert "qhil/__init__.py" not in names  # qhil is a namespace over the design-card folders
    # Data the package reads at run time: the shipped model and the CUDA source for NVRTC.
    for data in (
        "qhil/kernels/models/default.npz",
        "qhil/kernels/cuda/predecoder.cu",
        "qhil/host/defaults.toml",
    ):
        assert data in names, f"{data} is missing from the wheel"

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    # -S: no site processing, so the editable install's finder is not active; the
    # dependencies come from the plain site-packages folders.
    code = (
        "import sys, importlib, importlib.util\n"
        f"sys.path[:0] = [{str(target)!r}] + {site.getsitepackages()!r}\n"
        f"for f in {FOLDERS!r}:\n"
        "    m = importlib.import_module('qhil.' + f)\n"
        f"    assert m.__file__.startswith({str(target)!r}), m.__file__\n"
        "    assert importlib.util.find_spec(f) is None, f'bare package {f} is importable'\n"
        "from qhil.host import main\n"
        "assert main(command_line_args=['info']) == 0\n"
        "from qhil.kernels import PreDecoder\n"
        "import stim\n"
        "c = stim.Circuit.generated('surface_code:rotated_memory_z', distance=3, rounds=2)\n"
        "assert PreDecoder.for_circuit(c, backend='numpy').model.parameter_count > 0\n"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "front end:  cycle model" in out.stdout
