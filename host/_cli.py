"""The ``qhil`` command line: ``run``, ``serve``, ``keys``, ``info``, ``train`` and ``bench``.

``main(command_line_args=[...])`` runs in-process, so tests drive the CLI
without a subprocess. Every flag's help gives its default and its valid
choices. Exit status: 0 done (or interrupted), 1 the run failed (for example
the decoder became unresponsive), 2 bad input (flags, config, files, a backend
or extra this machine lacks: one line naming the problem and the fix), 3 an
internal error (a bug: one line, and the traceback with ``--debug``).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from qhil.host._cli_flags import add_config_flags
from qhil.host._commands import COMMANDS
from qhil.host._config import ConfigError

__all__ = ["main"]

# Optional dependencies, by the module a missing one fails to import, and the extra that brings it.
_EXTRAS = {
    "torch": "train",
    "cupy": "gpu",
    "numba_cuda": "gpu",
    "pynq": "board",
    "cudaq": "cudaq",
    "cudaq_qec": "cudaq",
    "cocotb": "hdl",
}


def _common_flags() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,  # so a subcommand's default never undoes `qhil --debug run`
        help="print the traceback of an error too (default: one line)",
    )
    return common


def _dry_run_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the flags, the config, the paths and the backend, then exit "
        "without starting anything (default: run)",
    )


def _metrics_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics on this port, 0 for any free port (default: off)",
    )
    p.add_argument(
        "--metrics-addr",
        default="127.0.0.1",
        metavar="ADDR",
        help="address the metrics endpoint listens on (default: 127.0.0.1)",
    )


def _run_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    run = sub.add_parser(
        "run",
        parents=[common],
        help="run the closed loop (front end + bridge + decoder)",
        description="Run the closed loop: the software front end streams a memory "
        "experiment's rounds through the bridge to the decoder and checks every correction.",
    )
    run.add_argument(
        "--save",
        type=Path,
        metavar="DIR",
        help="also export circuit, shots, predictions and latencies here (default: no export)",
    )
    run.add_argument(
        "--no-progress", action="store_true", help="no progress bar (default: show it)"
    )
    run.add_argument(
        "--external-decoder",
        action="store_true",
        help="do not spawn a decoder: a `qhil serve` is already listening (default: spawn one)",
    )
    run.add_argument(
        "--json",
        action="store_true",
        help="print report.json instead of the table (default: the table)",
    )
    _metrics_flags(run)
    _dry_run_flag(run)
    add_config_flags(run)


def _serve_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="run the decoder service as a daemon, one front-end session after another",
        description="Run the decoder service as a daemon until SIGTERM or Ctrl-C.",
    )
    serve.add_argument(
        "--sessions",
        type=int,
        default=0,
        metavar="N",
        help="stop after this many sessions (default: 0, run until SIGTERM or Ctrl-C)",
    )
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines on stdout: text, or json (JSON lines for a journal) (default: text)",
    )
    _metrics_flags(serve)
    _dry_run_flag(serve)
    add_config_flags(serve)


def _keys_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    keys = sub.add_parser(
        "keys", parents=[common], help="CURVE keys for authenticated tcp:// links"
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="{generate}")
    gen = keys_sub.add_parser(
        "generate",
        parents=[common],
        help="write a decoder key pair, a front-end key pair, and authorize it",
    )
    gen.add_argument("folder", type=Path, help="keys folder to create (made mode 0700)")
    gen.add_argument(
        "--overwrite", action="store_true", help="replace keys already there (default: refuse)"
    )


def _train_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    train = sub.add_parser(
        "train", parents=[common], help="train the pre-decoder CNN (needs the 'train' extra)"
    )
    train.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML file with a [train] table (default: kernels/models/default.toml's settings)",
    )
    train.add_argument("--steps", type=int, help="override the config's steps (default: config)")
    train.add_argument("--seed", type=int, help="override the config's seed (default: config)")
    train.add_argument(
        "--out",
        type=Path,
        default=Path("qhil-model.npz"),
        help="model file to write (default: qhil-model.npz)",
    )
    _dry_run_flag(train)


def _bench_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    bench = sub.add_parser(
        "bench",
        parents=[common],
        help="benchmarks: the bridge, the whole loop, the pre-decoder's accuracy",
    )
    bench.add_argument(
        "what",
        choices=("bridge", "loop", "all", "accuracy"),
        help="what to measure (all: bridge and loop)",
    )
    bench.add_argument("--out", type=Path, help="write results as JSON here (default: stdout only)")
    bench.add_argument(
        "--shots", type=int, default=10_000, help="loop: shots to run (default: 10,000)"
    )
    bench.add_argument(
        "--packets", type=int, default=20_000, help="bridge: packets to time (default: 20,000)"
    )
    _dry_run_flag(bench)
    acc = bench.add_argument_group("accuracy (sinter collect: resumable CSV)")
    acc.add_argument(
        "--csv", type=Path, default=Path("accuracy.csv"), help="rows go here (default: %(default)s)"
    )
    acc.add_argument("--distances", default="3,5,7,9", help="odd distances (default: %(default)s)")
    acc.add_argument("--bases", default="z,x", help="bases, of: x, z (default: %(default)s)")
    acc.add_argument("--ps", default="0.002,0.003,0.005", help="p values (default: %(default)s)")
    acc.add_argument(
        "--noise",
        default="stim-depolarizing",
        help="noise models, of: stim-depolarizing, sd6, si1000 (default: %(default)s)",
    )
    acc.add_argument(
        "--model", default="default", help="packaged model name or .npz path (default: %(default)s)"
    )
    acc.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "numpy", "numba", "cuda"),
        help="pre-decoder kernels: auto, numpy, numba or cuda (default: %(default)s)",
    )
    acc.add_argument(
        "--min-errors", type=int, default=100, help="stop a task at this many errors (default: 100)"
    )
    acc.add_argument(
        "--max-shots", type=int, default=200_000, help="or this many shots (default: 200,000)"
    )
    acc.add_argument("--chunk", type=int, default=10_000, help="shots per batch (default: 10,000)")
    acc.add_argument(
        "--max-seconds-per-task",
        type=float,
        default=None,
        help="or after this long (default: no limit)",
    )
    acc.add_argument(
        "--summary", type=Path, help="write a markdown summary and a .png here (default: none)"
    )


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``qhil`` parser, and each subcommand's parser by name."""
    common = _common_flags()
    parser = argparse.ArgumentParser(
        prog="qhil", description="Real-time QEC decoding loop.", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for build in (_run_parser, _serve_parser, _keys_parser, _train_parser, _bench_parser):
        build(sub, common)
    sub.add_parser("info", parents=[common], help="report GPU, board, backends and versions found")
    return parser, dict(sub.choices)


def _error_line(command: str, ex: BaseException, *, debug: bool) -> str:
    if debug:
        traceback.print_exc()
    text = str(ex).strip()
    if isinstance(ex, RuntimeError) and "\n" in text and not debug:
        # e.g. the decoder process's traceback: keep the first and last lines
        lines = text.splitlines()
        text = f"{lines[0]} {lines[-1].strip()} (--debug shows the rest)"
    return f"qhil {command}: {'failed' if isinstance(ex, RuntimeError) else 'error'}: {text}"


def main(*, command_line_args: Sequence[str] | None = None) -> int:
    """Entry point of the ``qhil`` command; returns the exit status."""
    parser, subparsers = _parser()
    try:
        args, unknown = parser.parse_known_args(command_line_args)
        if unknown:  # show the subcommand's usage, not the top level's
            subparsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as ex:  # --help (0) or a usage error (2), already printed
        return ex.code if isinstance(ex.code, int) else 2
    debug = getattr(args, "debug", False)
    sub = {"keys": "keys_command", "bench": "what"}.get(args.command)
    command = args.command + (f" {getattr(args, sub)}" if sub else "")
    try:
        return COMMANDS[args.command](args)
    except ModuleNotFoundError as ex:
        extra = _EXTRAS.get((ex.name or "").split(".")[0])
        if extra is None:
            return _internal_error(command, ex, debug=debug)
        print(
            f"qhil {command}: error: this needs {ex.name}, which is not installed: "
            f"pip install 'qhil[{extra}]'",
            file=sys.stderr,
            flush=True,
        )
        return 2
    except (ConfigError, ValueError, OSError) as ex:
        print(_error_line(command, ex, debug=debug), file=sys.stderr, flush=True)
        return 2
    except RuntimeError as ex:
        print(_error_line(command, ex, debug=debug), file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(
            f"qhil {command}: interrupted before the run started; nothing written",
            file=sys.stderr,
            flush=True,
        )
        return 130
    except Exception as ex:
        return _internal_error(command, ex, debug=debug)


def _internal_error(command: str, ex: BaseException, *, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(
        f"qhil {command}: internal error (a bug in qhil): {type(ex).__name__}: {ex}"
        + ("" if debug else "; rerun with --debug for the traceback, and please report it"),
        file=sys.stderr,
        flush=True,
    )
    return 3
