"""The ``qhil`` command line: ``run``, ``serve``, ``info`` and ``bench``.

``main(command_line_args=[...])`` runs in-process, so tests drive the CLI
without a subprocess. Errors in input (bad flags, bad config, missing files)
print one line naming the problem and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qhil.host._config import ConfigError, RunConfig

__all__ = ["main"]

# CLI flag -> (config key, type). Flags left unset keep the config file's value.
_OVERRIDES: dict[str, tuple[str, type]] = {
    "distance": ("experiment.distance", int),
    "rounds": ("experiment.rounds", int),
    "basis": ("experiment.basis", str),
    "noise": ("experiment.noise", str),
    "p": ("experiment.p", float),
    "shots": ("experiment.shots", int),
    "seed": ("experiment.seed", int),
    "mode": ("frontend.mode", str),
    "round_time_us": ("frontend.round_time_us", float),
    "budget_us": ("frontend.budget_us", float),
    "max_in_flight": ("frontend.max_in_flight", int),
    "correction_timeout_s": ("frontend.correction_timeout_s", float),
    "stall_timeout_s": ("frontend.stall_timeout_s", float),
    "transport": ("bridge.transport", str),
    "endpoint": ("bridge.endpoint", str),
    "n_slots": ("bridge.n_slots", int),
    "fault_rate": ("bridge.fault_rate", float),
    "fault_seed": ("bridge.fault_seed", int),
    "decoder": ("decoder.name", str),
    "backend": ("decoder.backend", str),
    "bridge_name": ("bridge.name", str),
    "keys": ("bridge.keys", str),
    "out": ("output.dir", str),
}


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML file; flags override its values")
    for flag, (key, kind) in _OVERRIDES.items():
        p.add_argument(
            f"--{flag.replace('_', '-')}", dest=flag, type=kind, default=None, help=f"sets {key}"
        )


def _add_metrics_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on this port (0: any free port)",
    )
    p.add_argument(
        "--metrics-addr",
        default="127.0.0.1",
        help="address the metrics endpoint listens on (default: 127.0.0.1)",
    )


def _config(args: argparse.Namespace) -> RunConfig:
    base = RunConfig.load(args.config) if args.config else RunConfig()
    overrides = {
        key: getattr(args, flag)
        for flag, (key, _) in _OVERRIDES.items()
        if getattr(args, flag, None) is not None
    }
    if getattr(args, "save", None):
        overrides["output.save"] = True
    if getattr(args, "external_decoder", False):
        overrides["decoder.spawn"] = False
    return base.with_overrides(overrides)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qhil", description="Real-time QEC decoding loop.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the closed loop (cycle model + bridge + decoder)")
    _add_config_flags(run)
    run.add_argument("--save", type=Path, help="also export circuit, shots, predictions, latencies")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--external-decoder",
        action="store_true",
        help="do not spawn a decoder: a `qhil serve` is already listening",
    )
    run.add_argument("--json", action="store_true", help="print report.json instead of the table")
    _add_metrics_flags(run)
    serve = sub.add_parser(
        "serve",
        help="run the decoder service as a daemon, one front-end session after another",
    )
    _add_config_flags(serve)
    serve.add_argument(
        "--sessions",
        type=int,
        default=0,
        help="stop after this many sessions (0: run until SIGTERM or Ctrl-C)",
    )
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines on stdout: text (default), or JSON lines for a journal",
    )
    _add_metrics_flags(serve)
    keys = sub.add_parser("keys", help="CURVE keys for authenticated tcp:// links")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    gen = keys_sub.add_parser(
        "generate", help="write a decoder key pair, a front-end key pair, and authorize it"
    )
    gen.add_argument("folder", type=Path, help="keys folder to create (made mode 0700)")
    gen.add_argument("--overwrite", action="store_true", help="replace keys already there")
    sub.add_parser("info", help="report GPU, board, backends and versions found")
    train = sub.add_parser("train", help="train the pre-decoder CNN (needs the 'train' extra)")
    train.add_argument("--config", type=Path, help="TOML file with a [train] table")
    train.add_argument("--steps", type=int, help="override the config's steps")
    train.add_argument("--seed", type=int, help="override the config's seed")
    train.add_argument("--out", type=Path, default=Path("qhil-model.npz"), help="model file")
    bench = sub.add_parser("bench", help="timing benchmarks (bridge alone, whole loop)")
    bench.add_argument("what", choices=("bridge", "loop", "all", "accuracy"))
    bench.add_argument("--out", type=Path, help="write results as JSON here")
    bench.add_argument("--shots", type=int, default=10_000)
    bench.add_argument("--packets", type=int, default=20_000)
    acc = bench.add_argument_group("accuracy (sinter-style CSV, resumable)")
    acc.add_argument("--csv", type=Path, default=Path("accuracy.csv"), help="rows append here")
    acc.add_argument("--distances", default="3,5,7,9", help="comma-separated odd distances")
    acc.add_argument("--bases", default="z,x")
    acc.add_argument("--ps", default="0.002,0.003,0.005", help="comma-separated p values")
    acc.add_argument(
        "--noise",
        default="stim-depolarizing",
        help="comma-separated noise models, of: stim-depolarizing, sd6, si1000",
    )
    acc.add_argument("--model", default="default", help="packaged model name or .npz path")
    acc.add_argument("--backend", default="auto")
    acc.add_argument("--min-errors", type=int, default=100)
    acc.add_argument("--max-shots", type=int, default=200_000)
    acc.add_argument("--chunk", type=int, default=10_000)
    acc.add_argument("--max-seconds-per-task", type=float, default=None)
    acc.add_argument("--summary", type=Path, help="write a markdown summary (and .png) here")
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from qhil.host._export import save_run
    from qhil.host._render import print_summary
    from qhil.host._runner import run_loop, write_outputs

    cfg = _config(args)
    out_dir = Path(cfg.output.dir)
    _check_writable(out_dir)  # before the run: its results must not be lost after it
    if args.save:
        _check_writable(args.save, flag="--save")
    console = Console(stderr=args.json)
    shots = cfg.experiment.shots
    metrics = _start_metrics(args, role="front_end", decoder=cfg.decoder.name, cfg=cfg)
    try:
        outcome = run_loop(
            cfg,
            progress=not args.no_progress,
            console=console,
            on_start=lambda: print(
                f"qhil run: decoder ready, streaming {shots:,} shots (Ctrl-C stops cleanly)",
                file=sys.stderr,
                flush=True,
            ),
            metrics=metrics,
        )
    except FileExistsError as ex:  # the rings' name is taken by a live run
        raise ConfigError(str(ex)) from None
    finally:
        if metrics is not None:
            metrics.close()
    paths = write_outputs(outcome, out_dir)
    if args.save:  # the shots again, a chunk at a time: the run did not keep them
        paths += save_run(
            args.save, circuit=outcome.circuit, shots=outcome.shot_chunks(), result=outcome.result
        )
    if args.json:
        print(outcome.report.to_json(), flush=True)
    else:
        print_summary(outcome.report, console=console)
        console.print(
            f"wrote {', '.join(str(p) for p in paths[:2])}"
            + (f" and {len(paths) - 2} files in {args.save}" if args.save else "")
        )
    return 1 if outcome.report.aborted and outcome.report.aborted != "interrupted" else 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from qhil.bridge import CurveKeys, layout_fingerprint, warm_up
    from qhil.host._daemon import ServeSignals, serve_forever
    from qhil.host._logs import configure_logging, log_event
    from qhil.host._runner import bridge_spec, build_circuit, service_config
    from qhil.host._service import DecoderService

    cfg = _config(args)
    b = cfg.bridge
    spec = bridge_spec(cfg)
    if b.transport == "shm" and not b.name:
        raise ConfigError(
            "serve over shm needs --bridge-name NAME, the ring name the front end uses "
            "(qhil run --bridge-name NAME --external-decoder)"
        )
    keys = CurveKeys.load(b.keys).for_server() if b.keys else None
    configure_logging(args.log_format)
    signals = ServeSignals()
    signals.install()  # from here SIGTERM / Ctrl-C stop cleanly, even during warm-up
    circuit = build_circuit(cfg)
    service = DecoderService.from_circuit(circuit, config=service_config(cfg))
    service.warm_up()
    warm_up()
    exporter = _start_metrics(args, role="decoder", decoder=service.decoder.name, cfg=cfg)
    try:
        done = serve_forever(
            service,
            spec,
            signals=signals,
            keys=keys,
            max_sessions=args.sessions,
            layout=layout_fingerprint(service.program.bits_per_round, circuit.num_observables),
            on_link=(lambda link: exporter.watch_decoder(service, link=link))
            if exporter
            else (lambda link: None),
            on_session_end=exporter.session_finished if exporter else (lambda live: None),
        )
    finally:
        if exporter is not None:
            exporter.close()
    log_event(
        "stopped",
        f"stopped after {len(done)} sessions, {sum(s.shots_decoded for s in done):,} shots decoded",
        sessions=len(done),
        shots_decoded=sum(s.shots_decoded for s in done),
    )
    return 0


def _start_metrics(args: argparse.Namespace, *, role: str, decoder: str, cfg: RunConfig) -> Any:
    """The Prometheus endpoint, when --metrics-port is given (None otherwise)."""
    if args.metrics_port is None:
        return None
    from qhil.host._metrics import MetricsExporter

    return MetricsExporter.start(
        port=args.metrics_port,
        addr=args.metrics_addr,
        role=role,
        decoder=decoder,
        transport=cfg.bridge.transport,
    )


def _cmd_keys(args: argparse.Namespace) -> int:
    from qhil.bridge import generate_keys

    written = generate_keys(args.folder, overwrite=args.overwrite)
    print(f"wrote {len(written)} key files into {args.folder}:")
    for path in written:
        print(f"  {path}")
    print(
        "decoder host: keep the folder (server.key_secret, authorized_clients/); "
        "front end: copy client.key_secret and server.key, then pass --keys DIR",
        flush=True,
    )
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from qhil.host._info import probe_environment

    env = probe_environment()
    print(f"machine:    {env.machine} (Python {env.python})")
    print(f"GPU:        {'yes' if env.gpu else 'no'} - {env.gpu_reason}")
    print(f"board:      {'yes' if env.board else 'no'} - {env.board_reason}")
    print(f"front end:  {env.frontend}")
    print(f"transports: {', '.join(env.transports)}")
    print(f"decoders:   {', '.join(env.decoders)}")
    print(f"numba:      {env.numba_threads} threads")
    print(f"pre-decoder backends: {', '.join(env.predecoder_backends)} (fastest first)")
    for name, version in env.versions.items():
        print(f"  {name:14s} {version}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from qhil.kernels import TrainConfig, plot_training, train, write_model

    config = TrainConfig.load(args.config) if args.config else TrainConfig()
    overrides = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
    config = dataclasses.replace(config, **overrides)
    out: Path = args.out
    if out.suffix != ".npz":
        raise ConfigError(f"--out must name a .npz model file; got {str(out)!r}")
    log = out.with_suffix(".log.csv")
    checkpoint = out.with_suffix(".ckpt.pt")
    _check_writable(out.parent)
    resuming = checkpoint.is_file()
    print(
        f"qhil train: {config.steps} steps, widths {list(config.widths)}, seed {config.seed}, "
        f"{config.labels} labels; loss log {log}; checkpoint {checkpoint}"
        + (" (resuming)" if resuming else ""),
        flush=True,
    )

    def progress(step: int, loss: float) -> None:
        if step % 200 == 0 or step == config.steps - 1:
            print(f"  step {step:6d}  loss {loss:.5f}", flush=True)

    model = train(config, log_path=log, checkpoint_path=checkpoint, on_step=progress)
    write_model(model, out)
    plot_training(model, log, out.with_suffix(".curves.png"))
    checkpoint.unlink()
    val = model.meta["validation"]
    kept = next(h for h in val["history"] if h["step"] == model.meta["kept_step"])
    print(
        f"wrote {out} ({model.parameter_count:,} parameters, receptive field "
        f"{model.receptive_field}, {model.meta['train_seconds']} s); kept step "
        f"{model.meta['kept_step']}: {kept['total']} validation errors against PyMatching's "
        f"{val['pymatching_errors']} on {val['shots']:,} shots",
        flush=True,
    )
    return 0


def _check_writable(folder: Path, *, flag: str = "--out") -> None:
    """Fail before a long run, not after it, when its outputs cannot be written
    (creates ``folder``); the error names the folder, the reason and ``flag`` to fix."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".qhil-write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = "a file has that name" if isinstance(exc, FileExistsError) else exc.strerror
        raise ConfigError(
            f"cannot write into {str(folder)!r} ({reason}); pick another {flag}"
        ) from None


def _bench_accuracy(args: argparse.Namespace) -> int:
    from qhil.host._accuracy import AccuracyTask, run_accuracy
    from qhil.host._accuracy_report import write_summary
    from qhil.host._report import machine_description

    def parse(text: str, kind: type) -> list[Any]:
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"cannot read {text!r} as a comma-separated list") from None

    tasks = [
        AccuracyTask(basis=b, distance=d, p=p, noise=n)
        for n in parse(args.noise, str)
        for b in parse(args.bases, str)
        for d in parse(args.distances, int)
        for p in parse(args.ps, float)
    ]
    run_accuracy(
        tasks,
        csv_path=args.csv,
        model=args.model,
        backend=args.backend,
        min_errors=args.min_errors,
        max_shots=args.max_shots,
        chunk=args.chunk,
        max_seconds_per_task=args.max_seconds_per_task,
        progress=lambda line: print(line, flush=True),
    )
    if args.summary:
        write_summary(
            args.csv,
            md_path=args.summary,
            png_path=args.summary.with_suffix(".png"),
            machine=machine_description(),
            min_errors=args.min_errors,
        )
        print(f"wrote {args.summary} and {args.summary.with_suffix('.png')}", flush=True)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from qhil.host._bench import bench_bridge, bench_loop

    if args.what == "accuracy":
        return _bench_accuracy(args)
    results: dict[str, Any] = {}
    if args.what in ("bridge", "all"):
        results["bridge"] = bench_bridge(packets=args.packets)
        print(json.dumps(results["bridge"], indent=2), flush=True)
    if args.what in ("loop", "all"):
        results["loop"] = bench_loop(shots=args.shots)
        print(json.dumps(results["loop"], indent=2), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def main(*, command_line_args: Sequence[str] | None = None) -> int:
    """Entry point of the ``qhil`` command; returns the exit status."""
    args = _parser().parse_args(command_line_args)
    commands = {
        "run": _cmd_run,
        "serve": _cmd_serve,
        "info": _cmd_info,
        "bench": _cmd_bench,
        "train": _cmd_train,
        "keys": _cmd_keys,
    }
    try:
        return commands[args.command](args)
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError, OSError) as ex:
        print(f"qhil {args.command}: error: {ex}", file=sys.stderr, flush=True)
        return 2
    except RuntimeError as ex:
        print(f"qhil {args.command}: failed: {ex}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(
            f"qhil {args.command}: interrupted before the run started; nothing written",
            file=sys.stderr,
            flush=True,
        )
        return 130
