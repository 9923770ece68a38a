"""What each ``qhil`` subcommand does, once its flags are parsed (see ``_cli``).

Expected failures raise :class:`ConfigError` (bad input, unavailable hardware
or backend), ``RuntimeError`` (the run failed); ``_cli.main`` turns each into one line and
an exit status.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from qhil.host._cli_flags import config_overrides
from qhil.host._config import ConfigError, RunConfig

__all__ = ["COMMANDS"]


def _config(args: argparse.Namespace) -> RunConfig:
    base = RunConfig.load(args.config) if args.config else RunConfig()
    overrides = config_overrides(args)
    if getattr(args, "save", None):
        overrides["output.save"] = True
    if getattr(args, "external_decoder", False):
        overrides["decoder.spawn"] = False
    return base.with_overrides(overrides)


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
    _check_backend(cfg)
    if cfg.bridge.keys:
        from qhil.bridge import CurveKeys

        CurveKeys.load(cfg.bridge.keys)  # a bad keys folder fails now, with its fix
    if args.dry_run:
        return _dry_run("run", cfg)
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
            on_status=lambda line: print(f"{line} ...", file=sys.stderr, flush=True),
            metrics=metrics,
        )
    except FileExistsError as ex:  # the rings' name is taken by a live run
        raise ConfigError(str(ex)) from None
    finally:
        if metrics is not None:
            metrics.close()
    outputs = write_outputs(outcome, out_dir)
    saved = []
    if args.save:  # the shots again, a chunk at a time: the run did not keep them
        saved = save_run(
            args.save, circuit=outcome.circuit, shots=outcome.shot_chunks(), result=outcome.result
        )
    if args.json:
        print(outcome.report.to_json(), flush=True)
    else:
        print_summary(outcome.report, console=console)
        console.print(
            f"wrote {', '.join(str(p) for p in outputs)}"
            + (f" and {len(saved)} files in {args.save}" if saved else "")
        )
    return 1 if outcome.report.aborted and outcome.report.aborted != "interrupted" else 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from qhil.bridge import (
        CurveKeys,
        check_server_endpoint,
        layout_fingerprint,
        on_first_compile,
        warm_up,
    )
    from qhil.host._daemon import ServeSignals, serve_forever
    from qhil.host._logs import configure_logging, log_event
    from qhil.host._prepare import compiling_message
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
    if b.transport == "zmq":
        check_server_endpoint(b.endpoint, keys=keys)
    _check_backend(cfg)
    if args.dry_run:
        return _dry_run("serve", cfg)
    configure_logging(args.log_format)
    if cfg.decoder.cpu != -1:  # this process serves until it is stopped: pinned for its life
        os.sched_setaffinity(0, {cfg.decoder.cpu})
    signals = ServeSignals()
    signals.install()  # from here SIGTERM / Ctrl-C stop cleanly, even during warm-up
    circuit = build_circuit(cfg)
    service = DecoderService.from_circuit(circuit, config=service_config(cfg))
    with on_first_compile(lambda: log_event("compiling", compiling_message("qhil serve"))):
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
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise ConfigError("training needs PyTorch: pip install 'qhil[train]'")
    log = out.with_suffix(".log.csv")
    checkpoint = out.with_suffix(".ckpt.pt")
    _check_writable(out.parent)
    if args.dry_run:
        print(f"qhil train: dry run, {config.steps} steps into {out}, nothing started", flush=True)
        return 0
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


def _check_backend(cfg: RunConfig) -> None:
    """Fail before start-up when the chosen pre-decoder backend cannot run here."""
    from qhil.host._decoders import DECODERS_WITH_KERNELS

    d = cfg.decoder
    if d.name not in DECODERS_WITH_KERNELS or d.backend == "auto":
        return
    from qhil.kernels import available_backends

    here = available_backends()
    needs = "cuda" if d.backend.startswith("cuda") else d.backend
    if needs not in here:
        why = (
            "it needs an NVIDIA GPU with CuPy (pip install 'qhil[gpu]'; `qhil info` says what "
            "was found)"
            if needs == "cuda"
            else "its kernels did not load"
        )
        raise ConfigError(
            f"--backend {d.backend} cannot run on this machine: {why}; "
            f"backends that run here: {', '.join(here)}, or auto"
        )


def _dry_run(command: str, cfg: RunConfig) -> int:
    e, f, b, d = cfg.experiment, cfg.frontend, cfg.bridge, cfg.decoder
    print(
        f"qhil {command}: dry run, configuration OK, nothing started: d={e.distance}, "
        f"{e.rounds} rounds, {e.basis} basis, {e.noise} p={e.p:g}, {e.shots:,} shots; "
        f"{f.mode} front end, {b.transport} bridge, decoder {d.name} (backend {d.backend}); "
        f"output {cfg.output.dir}",
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
    if args.dry_run:
        print(f"qhil bench accuracy: dry run, {len(tasks)} tasks, nothing started", flush=True)
        return 0
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
    if args.dry_run:
        print(f"qhil bench {args.what}: dry run, nothing started", flush=True)
        return 0
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


COMMANDS = {
    "run": _cmd_run,
    "serve": _cmd_serve,
    "info": _cmd_info,
    "bench": _cmd_bench,
    "train": _cmd_train,
    "keys": _cmd_keys,
}
