"""The ``bci`` command line (contract: DESIGN.md section 3).

Every subcommand prints ``error: <message>`` and exits 2 on bad input (any
:class:`~bci.errors.BCIError`); unexpected failures exit 1 with the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from .errors import BCIError, StreamError

BENCHES = ("kernels", "acm", "latency", "dashboard", "dbconformer", "distributed", "device_check", "adaptation", "windows")


def parse_subjects(text: str) -> list[int]:
    """Subjects written like ``1,2,5-8`` (also the type of every ``--subjects`` option)."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        if sep and lo.isdigit() and hi.isdigit():
            out += list(range(int(lo), int(hi) + 1))
        elif part.isdigit():
            out.append(int(part))
        else:
            raise argparse.ArgumentTypeError(f"expected subjects like 1,2,5-8, found {text!r}")
    return out


def cmd_info(args) -> int:
    from .io import describe, load_recording

    for i, path in enumerate(args.path):
        if i:
            print()
        print(describe(load_recording(path)))
    return 0


def cmd_evaluate(args) -> int:
    from .config import load_config
    from .evaluate import evaluate, summary_text

    cfg = load_config(args.config)
    out = Path(args.out or Path("results") / Path(args.config).stem)
    frame = evaluate(cfg, out, subjects=args.subjects, progress=not args.no_progress, cluster=args.cluster)
    print(summary_text(frame))
    plots = out / "malow_trend.png" if (cfg.get("evaluation") or {}).get("kind") == "seizure" else "plots"
    print(f"wrote {out / 'results.csv'}, {out / 'summary.md'} and {plots}")
    return 0


def cmd_train(args) -> int:
    from .training import train

    model = train(args.config, args.out, progress=not args.no_progress)
    meta = model.metadata
    counts = ", ".join(f"{c}: {n}" for c, n in meta["n_windows"].items())
    contract = model.channels_contract
    reads = contract.describe(model.channels if contract.kind == "fixed" else ())
    print(
        f"trained {model.name} on {sum(meta['n_windows'].values())} windows ({counts}) of "
        f"{model.n_times} samples @ {model.sfreq:g} Hz in {meta['fit_seconds']:.1f} s; "
        f"training accuracy {meta['train_accuracy']:.3f}; reads {reads}"
    )
    if meta.get("pretrained"):  # the weights it started from: hub checkpoint or our own pretraining
        from models.hub import describe

        print(f"fine-tuned from {describe(meta['pretrained'])}")
    point = meta.get("operating_point")
    if point:
        print(
            f"alarm threshold {point['threshold']:g}: {point['false_alarms']} false alarm(s) in {point['hours']:.1f} h of "
            f"training background ({point['fp_per_24h']:.1f} per 24 h, target {point['target_fp_per_24h']:g}"
            f"{'' if point['reached'] else ', not reached'}; one is {point['resolution_fp_per_24h']:.1f} per 24 h here), "
            f"{point['sensitivity']:.0%} of training seizures alarmed; {point['probabilities']} probabilities"
        )
    print(f"wrote {args.out}")
    return 0


def cmd_predict(args) -> int:
    import json
    from pathlib import Path

    from .io import load_recording
    from .model import TrainedModel

    if args.events and len(args.paths) != 1:
        raise BCIError(f"--events writes the events.tsv of one recording; found {len(args.paths)} paths")
    model = TrainedModel.load(args.model_dir)
    if model.metadata.get("pretrained"):  # licence and terms of use of the weights it started from
        from models.hub import describe

        print(f"{model.name}: fine-tuned from {describe(model.metadata['pretrained'])}")
    records = []
    for path in args.paths:
        recording = load_recording(path)
        rows = model.predict_recording(recording, hop_s=args.hop, adapt=args.adapt)
        records += [{"file": Path(path).name, **r} for r in rows]
        means = ", ".join(f"{c} {sum(r[c] for r in rows) / len(rows):.3f}" for c in model.classes)
        bound = model.bind(recording.channels)
        read = bound.channels_contract.describe(bound.channels)
        print(f"{Path(path).name}: {len(rows)} windows of {model.window_s:g} s on {read}; mean probability {means}")
        if args.events:
            from .seizure import write_detections

            print(f"wrote {write_detections(args.events, model, recording, rows)} seizure event(s) to {args.events}")
    if args.json:
        Path(args.json).write_text(json.dumps(records))
        print(f"wrote {len(records)} records to {args.json}")
    return 0


def cmd_pretrain(args) -> int:
    from .pretraining import run_pretrain

    out = run_pretrain(args.config, args.out, progress=not args.no_progress, resume=not args.no_resume)
    if out["rank"] == 0:
        last = "n/a" if out["last_loss"] is None else f"{out['last_loss']:.3f}"
        print(
            f"pretrained {out['preset']} MVPFormer on {out['n_windows']} windows from {out['n_recordings']} recordings "
            f"({out['world_size']} process(es), {out['strategy']}): steps {out['start_step']} -> {out['step']}, "
            f"loss (last 10) {last}, {out['seconds']:.1f} s"
        )
        print(f"wrote {args.out}")
    return 0


def _say(line: str) -> None:
    print(line, flush=True)


# The live commands import realtime/ (liblsl) and gui/ (Qt) in their handlers: `bci info`,
# `bci evaluate` and the others start without loading either.
def cmd_record(args) -> int:
    from realtime import quiet_liblsl, stop_signals_interrupt
    from realtime.recorder import record
    from realtime.recording import recover

    quiet_liblsl()
    if args.recover:
        _say(f"recovered {recover(args.out).describe()}")
        return 0
    if not args.source:
        raise StreamError("bci record needs --source NAME (the signal stream to record), or --recover")
    stop_signals_interrupt()  # SIGTERM and Ctrl-C close the file alike
    summary = record(args.source, args.out, markers=args.markers or "auto", seconds=args.seconds, flush_s=args.flush,
                     timeout=args.timeout, on_status=_say)
    _say(f"wrote {summary.describe()}")
    return 0


def cmd_calibrate(args) -> int:
    from gui.calibration import run_calibration
    from realtime import quiet_liblsl

    from .paradigm import load_calibration

    quiet_liblsl()
    cal = load_calibration(args.config)
    _say(f"calibration: {cal.describe()}; recording {args.source!r} + markers {cal.marker_stream!r} to {args.out}; "
         "Esc stops early")
    result = run_calibration(cal, args.source, args.out, timeout=args.timeout)
    _say(f"{'stopped early' if result.aborted else 'finished'} after {result.trials_shown} of {result.trials_planned} trials")
    _say(f"wrote {result.recording.describe()}")
    _say(f"train on it: list it in train.recordings with train.events {cal.classes} (see configs/train_calibration.yaml)")
    return 0


def cmd_replay(args) -> int:
    """``bci replay FILE [--name NAME] [--speed X] [--loop]``: play until the end or Ctrl-C."""
    from realtime import quiet_liblsl, stop_signals_interrupt
    from realtime.replay import Replay

    quiet_liblsl()
    stop_signals_interrupt()
    player = Replay(args.file, args.name, speed=args.speed, loop=args.loop)
    rec = player.recording
    markers = f" + markers {player.name + '-markers'!r} ({player.n_annotations} annotations)" if player.with_markers else ""
    _say(
        f"replaying {Path(args.file).name}: {len(rec.channels)} ch @ {rec.sfreq:g} Hz, {rec.duration:.1f} s"
        f" at {player.speed:g}x{' (looping)' if player.loop else ''} as LSL stream {player.name!r}"
        f" (source_id {player.source_id}){markers}; Ctrl-C stops"
    )
    player.start()
    try:
        while not player.wait(0.5):
            pass
        time.sleep(1.0)  # let inlets drain the last chunk before the outlet closes
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr, flush=True)
    finally:
        player.stop()
    _say(f"pushed {player.n_pushed} samples, {player.n_markers} markers")
    return 0


def cmd_stream(args) -> int:
    """``bci stream --model MODEL_DIR [--source NAME] [--feedback [--paradigm CONFIG]]``: decode live until Ctrl-C."""
    if args.paradigm and not args.feedback:
        raise BCIError("--paradigm runs its cues in the feedback view: add --feedback")
    from realtime import quiet_liblsl, stop_signals_interrupt
    from realtime.decoder import Decoder, DecoderConfig

    quiet_liblsl()
    stop_signals_interrupt()
    config = DecoderConfig.load(adapt=args.adapt, adapt_state=args.adapt_state)
    decoder = Decoder(args.model, args.source, config)
    decoder.open()
    m = decoder.model
    _say(f"decoding {decoder.inlet.describe()} with {m.name} ({', '.join(m.classes)}; window {m.window_s:g} s, "
         f"hop {decoder.hop_s * 1e3:g} ms, {decoder.summary()['path']}; {decoder.adaptation_text()}); {decoder.mapping.report()}")
    _say(f"publishing on LSL {config.outlet_name!r} (probabilities + source_time) and {config.marker_name!r}; Ctrl-C stops")
    tty = sys.stdout.isatty()
    decoder.start()
    try:
        if args.feedback:  # the feedback view until closed or Ctrl-C
            from gui.feedback import stream_feedback

            stream_feedback(decoder, paradigm=args.paradigm)
        else:
            while True:
                time.sleep(1.0)
                if decoder.error is not None:
                    break
                line = decoder.status_line()
                print(("\r\033[K" + line) if tty else line, end="" if tty else "\n", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        if tty:
            print()
        decoder.stop()
    s = decoder.summary()
    _say(
        f"stopped: {s['decisions']} decisions, latency p50 {s['latency_p50_ms']:.2f} ms p95 {s['latency_p95_ms']:.2f} ms "
        f"p99 {s['latency_p99_ms']:.2f} ms max {s['latency_max_ms']:.2f} ms; dropped windows {s['dropped_windows']}, "
        f"dropped samples {s['dropped_samples']}, withheld {s['withheld']}, stream losses {s['losses']}"
    )
    return 0


def cmd_bench(args, extra: list[str]) -> int:
    import importlib

    try:
        module = importlib.import_module(f"benchmarks.{args.name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"benchmarks.{args.name}":
            raise
        raise BCIError(f"benchmark {args.name!r} is not available in this version") from None
    argv = list(extra) + (["--json", args.json] if args.json else [])
    module.main(argv)
    return 0


def _not_yet(name: str):
    def run(args) -> int:
        raise BCIError(f"'bci {name}' is not available in this version yet (see the project's open issues)")

    return run


def cmd_dashboard(args) -> int:
    from gui.app import run_dashboard

    screenshot, seconds = run_dashboard(source=args.source, replay=args.replay, review=args.review, model_dir=args.model,
                                        config=args.config, events=args.events, speed=args.speed, seconds=args.seconds,
                                        screenshot=args.screenshot)  # fmt: skip
    if screenshot is not None:
        _say(f"wrote {screenshot} after {seconds:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bci", description="EEG/iEEG brain-computer interface: evaluate, train, stream, monitor.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("evaluate", help="offline evaluation -> DIR/results.csv, plots, summary.md")
    p.add_argument("config", help="evaluation config (YAML), e.g. configs/physionet_mi.yaml")
    p.add_argument("--out", help="output folder (default results/<config name>); re-running resumes")
    p.add_argument("--subjects", type=parse_subjects, help="subjects to run, e.g. 1,2,5-8 (overrides the config)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--cluster", metavar="local:N|tcp://HOST:PORT", help="run the cells on Dask: N local worker processes or an existing scheduler")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("train", help="fit one pipeline; save it (+ its preprocessing) to MODEL_DIR")
    p.add_argument("config")
    p.add_argument("--out", required=True, metavar="MODEL_DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("pretrain", help="self-supervised MVPFormer pretraining")
    p.add_argument("config")
    p.add_argument("--out", required=True, metavar="MODEL_DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-resume", action="store_true", help="start again even if MODEL_DIR holds a checkpoint")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("replay", help="play a recording as a live LSL stream")
    p.add_argument("file")
    p.add_argument("--name", default=None, help="stream name (default: the file name)")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed factor")
    p.add_argument("--loop", action="store_true", help="start again at the end")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("record", help="save a live stream (+ markers) to an MNE-readable file")
    p.add_argument("--source", metavar="NAME", help="signal stream to record (required unless --recover)")
    p.add_argument("--out", required=True, metavar="FILE.fif")
    p.add_argument("--markers", metavar="NAME", help="marker stream (default: NAME-markers when visible)")
    p.add_argument("--seconds", type=float, help="stop after this many seconds of signal (default: Ctrl-C)")
    p.add_argument("--flush", type=float, default=2.0, metavar="S", help="seconds between segment writes: the most a crash loses")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds to wait for the streams")
    p.add_argument("--recover", action="store_true", help="build FILE.fif from the parts an interrupted recording left")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("calibrate", help="cue-based calibration session, recorded")
    p.add_argument("config", help="calibration config (YAML), e.g. configs/calibration_lr.yaml")
    p.add_argument("--source", required=True, metavar="NAME")
    p.add_argument("--out", required=True, metavar="FILE.fif")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="seconds to wait for the stream")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("stream", help="live decoding; publishes results on LSL")
    p.add_argument("--model", required=True, metavar="MODEL_DIR")
    p.add_argument("--source", metavar="NAME")
    p.add_argument("--feedback", action="store_true", help="open the feedback view (cursor / bars of the class probabilities)")
    p.add_argument("--paradigm", metavar="CONFIG", help="with --feedback: run a calibration config's cues above the cursor (markers on LSL)")
    p.add_argument("--adapt", action=argparse.BooleanOptionalAction, default=None,
                   help="re-centre the model's alignment on the incoming session as it runs, one window per window length (default: on for "
                        "models with Euclidean alignment or re-centring)")
    p.add_argument("--adapt-state", metavar="NPZ", help="resume the adapted reference from this file if it exists; save it on exit")
    p.set_defaults(func=cmd_stream)

    p = sub.add_parser("dashboard", help="clinician-facing seizure monitoring dashboard")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--source", metavar="NAME")
    src.add_argument("--replay", metavar="FILE")
    src.add_argument("--review", metavar="FILE", help="open a whole recording for review (not live): mark seizures and artefacts, export events.tsv")
    p.add_argument("--model", metavar="MODEL_DIR")
    p.add_argument("--screenshot", metavar="PNG", help="run offscreen for --seconds, then save the window")
    p.add_argument("--seconds", type=float, help="run for this many seconds, then close")
    p.add_argument("--speed", type=float, help="replay speed factor (with --replay)")
    p.add_argument("--config", metavar="YAML", help="dashboard settings (default configs/dashboard.yaml)")
    p.add_argument("--events", metavar="DB", help="SQLite event log (default: the config's event_log)")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("info", help="channels, sfreq, duration, annotations of a recording")
    p.add_argument("path", nargs="+", help="recording file(s) or a Malow folder")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("predict", help="apply a saved model offline: per-window probabilities")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--json", metavar="OUT", help="write the records (file, start_s, end_s, one key per class)")
    p.add_argument("--hop", type=float, help="seconds between windows (default: the model's decision hop)")
    p.add_argument("--events", metavar="OUT.tsv", help="seizure models: write the detector's seizures as an SzCORE/BIDS events.tsv (one recording)")
    p.add_argument("--adapt", action=argparse.BooleanOptionalAction, default=None,
                   help="aligned models: re-centre on each recording as it goes, as bci stream (default on for them); "
                        "--no-adapt keeps the training reference")  # fmt: skip
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("bench", help="benchmarks against peers, printing a table (extra options go to the benchmark)")
    p.add_argument("name", choices=BENCHES)
    p.add_argument("--json", metavar="PATH", help="also write the table as JSON records")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = args.func(args, extra) if args.command == "bench" else args.func(args)
        sys.stdout.flush()  # a closed pipe is reported here, inside the handler below
        return code
    except BCIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`bci info FILE | head`): stop quietly, as Unix tools do, and
        # point stdout at /dev/null so the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
