"""Every command in the README and in docs/ runs, so an example can never rot.

Commands come from ``bash``/``sh`` code blocks and from inline code spans that
start with ``qhil`` or ``python -m qhil``. Placeholders (``DIR``, ``NAME``,
``DECODER``, key folders, config files) become real temporary ones. What each
command does:

- ``qhil run`` that spawns its decoder runs for real, with ``-n 200`` appended
  (the last flag wins) and its outputs in a temporary folder;
- ``qhil keys generate`` and ``qhil info`` run for real;
- the rest (``serve``, a ``run`` against an external decoder, ``train``,
  ``bench``) run with ``--dry-run``: flags, config, paths, keys and backend are
  all checked, and nothing starts;
- ``python -m qhil...`` runs in a subprocess;
- ``sinter collect`` runs on the circuit files it names (made here from
  ``qhil.sim``) with few shots; ``sinter plot`` plots such a run's CSV.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qhil.host import main
from qhil.sim import NoiseModel, memory_circuit

REPO = Path(__file__).resolve().parents[1]
DOCS = [
    REPO / "README.md",
    *sorted((REPO / "docs").rglob("*.md")),
    REPO / "deploy" / "README.md",
    REPO / "kernels" / "models" / "MODEL_CARD.md",
    REPO / "fpga" / "rtl" / "README.md",
]
_BLOCK = re.compile(r"```(?:bash|sh)\n(.*?)```", re.S)
_INLINE = re.compile(r"`((?:qhil|python3? -m qhil\.[\w.]+) [^`]+)`")  # a bare `qhil run` names it
# qhil, python -m qhil.<module>, or sinter with qhil's decoders; also /opt/.../qhil
_START = re.compile(r"^(\S*/)?(qhil|python3? -m qhil\.[\w.]+|sinter)(\s|$)")


def _commands_in(text: str) -> list[str]:
    found = []
    for block in _BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("#")[0].split("&&"):
                if m := _START.match(part.strip()):
                    found.append(part.strip()[len(m.group(1) or "") :])
    text_outside = _BLOCK.sub("", text)
    for span in _INLINE.findall(text_outside):
        command = " ".join(span.split())
        if re.search(r"[|<>]|\.\.\.", command) or re.match(r"qhil [\w ]+:", command):
            continue  # a synopsis like `bench a|b`, or output like `qhil run: error: ...`
        if len(command.split()) == 2 and command.split()[1] not in ("run", "info"):
            continue  # `qhil serve` names the subcommand; it is not an example of it
        found.append(command)
    return found


def _all_commands() -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for path in DOCS:
        for command in _commands_in(path.read_text()):
            seen.setdefault(command, str(path.relative_to(REPO)))
    return [(where, command) for command, where in seen.items()]


COMMANDS = _all_commands()


def test_the_docs_have_commands_to_check() -> None:
    assert len(COMMANDS) >= 15
    assert any(c.startswith("qhil run --fault-rate") for _, c in COMMANDS)


def _placeholders(tmp: Path) -> dict[str, str]:
    keys = tmp / "keys"
    if not keys.exists():
        assert main(command_line_args=["keys", "generate", str(keys)]) == 0
    config = tmp / "run.toml"
    shutil.copy(REPO / "host" / "defaults.toml", config)
    circuit = tmp / "board-test.stim"
    circuit.write_text(str(memory_circuit(distance=3, rounds=2, basis="z")))
    return {
        "DIR": str(tmp / "dir"),
        "NAME": f"qdoc{os.getpid() % 10_000}",
        "DECODER": "127.0.0.1",
        "decoder-host": "127.0.0.1",
        "~/qhil-keys": str(keys),
        "/etc/qhil/keys": str(keys),
        "run.toml": str(config),
        "FILE": str(config),
        "board-test.stim": str(circuit),
        "circuit.stim": str(circuit),
    }


def _materialize(command: str, tmp: Path) -> list[str]:
    """The command's words with placeholders replaced and repo paths made absolute."""
    subs = _placeholders(tmp)
    if command.startswith("qhil keys generate"):  # a folder to create, not the one made here
        subs["/etc/qhil/keys"] = subs["DIR"] = str(tmp / "new-keys")
    words = []
    for i, word in enumerate(shlex.split(command)):
        for key, value in subs.items():
            word = re.sub(rf"(?<![\w/.-]){re.escape(key)}(?![\w-])", value, word)
        if words and words[-1] == "--keys" and word == str(tmp / "dir"):
            word = str(tmp / "keys")  # DIR after --keys: a folder with keys in it
        if i and (REPO / word).exists() and "/" in word:
            word = str(REPO / word)
        words.append(word)
    return words


@pytest.mark.slow
@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[c for _, c in COMMANDS])
def test_documented_command_runs(
    where: str, command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    words = _materialize(command, tmp_path)
    if words[0] == "sinter":
        _run_sinter(words, tmp_path, where=where, command=command)
        return
    if words[0] != "qhil":
        done = subprocess.run(
            [sys.executable, *words[1:]], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"{where}: {command}\n{done.stdout}\n{done.stderr}"
        return
    args = words[1:]
    if args[0] == "run" and "--external-decoder" not in args:
        args += ["-n", "200", "--no-progress", "--out", str(tmp_path / "out")]
    elif args[0] not in ("keys", "info"):
        args.append("--dry-run")
    assert main(command_line_args=args) == 0, f"{where}: {command}"


def _run_sinter(words: list[str], tmp: Path, *, where: str, command: str) -> None:
    exe = shutil.which("sinter", path=str(Path(sys.executable).parent))
    assert exe, "sinter's command line is installed with the sinter package"
    few = ["--max_shots", "200", "--max_errors", "5", "--processes", "1", "--quiet"]
    if words[1] == "plot":  # it plots a collect run's CSV: make one
        circuit = tmp / "d=3,p=0.01.stim"
        noise = NoiseModel.from_name("stim-depolarizing", 0.01)
        circuit.write_text(str(memory_circuit(distance=3, rounds=3, basis="z", noise=noise)))
        collect = [
            exe,
            "collect",
            "--circuits",
            str(circuit),
            "--metadata_func",
            "auto",
            "--decoders",
            "pymatching",
            "--save_resume_filepath",
            "stats.csv",
            *few,
        ]
        subprocess.run(collect, check=True, capture_output=True, timeout=300)  # fmt: skip
    for word in words:
        if m := re.fullmatch(r"d=(\d+),p=([\d.]+)\.stim", word):
            d, p = int(m.group(1)), float(m.group(2))
            noise = NoiseModel.from_name("stim-depolarizing", p)
            (tmp / word).write_text(
                str(memory_circuit(distance=d, rounds=d, basis="z", noise=noise))
            )
    args = [exe, *words[1:], *(few if words[1] == "collect" else [])]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{where}: {command}\n{done.stdout}\n{done.stderr}"
