"""Live-loop latency: a real recording replayed over LSL through the full decoding loop.

For every case, two processes on loopback, as in use: a **replay process**
(:class:`realtime.replay.Replay`: the recording pushed at real time, ``--speed``,
stamped at the push) and a **loop process** (:class:`realtime.decoder.Decoder`: inlet,
channel mapping, causal preprocessing, the saved model, smoothing, ``bci-out``). The loop
records, for every decision, the time from the arrival of its window's last sample
(local clock at the pull that returned it) to the return of the push on ``bci-out``;
the table gives p50/p95/p99/p99.9/max of it, the model call alone (p50, p99), its ratio to
the transport floor measured in the same run (``p50_x_floor``, ``p99_x_floor``: over the
1 ms-poll transport's p50 and p99, the loop's own way of reading), the 1-minute load
average before and after each case, and the counters:
``dropped_windows`` (decisions skipped because the loop was behind) and
``dropped_samples`` (samples pushed that the loop never got, plus any gap in the
timestamps).

Cases (models trained here with :func:`bci.training.train` / :class:`bci.model.TrainedModel`
on real data, cached in ``--models``):

- 22 ch @ 250 Hz, DBConformer: PhysioNet EEGBCI subject 1 imagery runs, 22 sensorimotor
  channels (the BCI IV 2a montage), resampled to 250 Hz; replay of run 8 in that form;
- 64 ch @ 160 Hz, ACM+TS+SVM (augmented covariances of order 2, lag 2 -> 128 x 128,
  tangent space, linear SVM with Platt probabilities): all 64 channels; replay of run 8
  as recorded;
- 64 ch @ 1000 Hz, the same model: run 8 resampled to 1000 Hz, resampled back to 160 Hz
  live by the model's preprocessing (the "no drop at 64 x 1000 Hz" check);
- 21 ch @ 100 Hz, MVPFormer tiny: the Malow seizure recording; the loop uses the
  streaming path (one 0.5 s segment per step, cached keys/values);

and the floor: bare LSL transport (push -> pull) of single samples, polled without
sleeping and with the loop's 1 ms poll.

``--long``: a 30-minute recording equivalent (run 8 looped) replayed at 20x through the
DBConformer case, sampling the loop process's resident memory: growth after warm-up,
drops, crashes. At 20x the model's 62.5 ms hop asks for 320 decisions per second; the
loop decodes what it can and counts the rest as dropped windows (``--hop 1.25`` keeps
the real-time decision rate, 16 per second, for a drop-free check).

``--no-gc-control`` runs the loop with the garbage collector left alone (``realtime.decoder.GC_CONTROL``)
for an A/B of the jitter measures.

Run as ``python -m benchmarks.latency [--json PATH]`` (or ``bci bench latency``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
import uuid
from pathlib import Path

import numpy as np

from benchmarks.common import emit, rss_mib

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
EEGBCI = DATA / "mne_data" / "MNE-eegbci-data" / "files" / "eegmmidb" / "1.0.0" / "S001"
MALOW = DATA / "seizure" / "malow"
#: The 22 electrodes of BCI Competition IV 2a, all present in PhysioNet's 64.
MONTAGE_22 = ["Fz", "FC3", "FC1", "FCz", "FC2", "FC4", "C5", "C3", "C1", "Cz", "C2",
              "C4", "C6", "CP3", "CP1", "CPz", "CP2", "CP4", "P1", "Pz", "P2", "POz"]  # fmt: skip
TRAIN_RUNS = ["S001R04.edf", "S001R12.edf"]
REPLAY_RUN = "S001R08.edf"


# ----------------------------------------------------------------- models
def _write_yaml(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _train(models: Path, key: str, pipeline: dict, preprocessing: dict, channels: list | None) -> Path:
    from bci.training import train

    out = models / key
    if (out / "model.json").is_file():
        return out
    work = models / f"{key}-config"
    work.mkdir(parents=True, exist_ok=True)
    pipe = _write_yaml(work / "pipeline.yml", pipeline)
    section = {"pipeline": str(pipe), "recordings": [str(EEGBCI / r) for r in TRAIN_RUNS],
               "events": {"T1": "left_hand", "T2": "right_hand"}, "tmin": 0.5, "tmax": 2.5, "hop": 0.0625}
    if channels:
        section["channels"] = channels
    cfg = _write_yaml(work / "train.yaml", {"name": f"latency bench {key}", "seed": 42,
                                            "preprocessing": preprocessing, "train": section})
    t0 = time.perf_counter()
    train(cfg, out, progress=False)
    print(f"trained {key} in {time.perf_counter() - t0:.1f} s -> {out}", flush=True)
    return out


def _mvpformer(models: Path) -> Path:
    """Tiny MVPFormer (DeepClassifier) on Malow windows: background vs the seizure (onset ~350 s)."""
    import torch

    from bci.io import load_recording
    from bci.model import TrainedModel
    from bci.preprocess import Preprocessor, sliding_windows
    from pipelines.deep import DeepClassifier

    out = models / "mvpformer"
    if (out / "model.json").is_file():
        return out
    torch.manual_seed(0)
    rec = load_recording(MALOW)
    pre = Preprocessor(bandpass=[0.5, 40.0])
    processed = pre.apply(rec, causal=True)
    windows, starts = sliding_windows(processed.data, processed.sfreq, 4.0, 2.0)
    ends = starts + 4.0
    keep = (ends < 330) | (starts > 350)  # leave out windows straddling the onset
    y = np.where(starts > 350, "seizure", "background")[keep]
    clf = DeepClassifier("MVPFormer", module_params={"size": "tiny", "segment_len": 50}, sfreq=100.0,
                         max_epochs=5, batch_size=32, seed=42)
    t0 = time.perf_counter()
    clf.fit(windows[keep], y)
    model = TrainedModel(name="MVPFormer tiny", estimator=clf, classes=["background", "seizure"],
                         input_channels=rec.channels, sfreq=100.0, window_s=4.0, hop_s=0.5,
                         preprocessing=pre.to_config(), task="seizure",
                         metadata={"seed": 42, "trained_on": ["malow (windows before 330 s / after 350 s)"]})
    model.save(out)
    print(f"trained mvpformer in {time.perf_counter() - t0:.1f} s -> {out}", flush=True)
    return out


def build_models(models: Path) -> dict[str, Path]:
    models.mkdir(parents=True, exist_ok=True)
    deep = {"name": "DBConformer", "paradigms": ["LeftRightImagery"],
            "pipeline": [{"name": "make_deep_pipeline", "from": "pipelines.deep",
                          "parameters": {"name": "DBConformer", "max_epochs": 30, "lr": 0.001, "batch_size": 32}}]}
    # fixed order/lag: a search over 64-channel augmented matrices (up to 640 x 640) is too slow here
    acm = {"name": "ACM+TS+SVM (order 2, lag 2)", "paradigms": ["LeftRightImagery"],
           "pipeline": [{"name": "make_riemann_pipeline", "from": "pipelines.riemann",
                         "parameters": {"name": "ACM+TS+SVM", "selection": "fixed", "order": 2, "lag": 2,
                                        "kernel": "linear"}}]}
    return {
        "dbconformer": _train(models, "dbconformer", deep, {"bandpass": [8, 30], "resample": 250}, MONTAGE_22),
        "acm": _train(models, "acm", acm, {"bandpass": [8, 30], "resample": 160}, None),
        "mvpformer": _mvpformer(models),
    }


def build_sources(work: Path) -> dict[str, Path]:
    """The recordings replayed: run 8 as recorded, as 22 ch @ 250 Hz, as 64 ch @ 1000 Hz (FIF)."""
    import mne
    from scipy.signal import resample_poly

    from bci.io import Recording, load_recording

    work.mkdir(parents=True, exist_ok=True)
    rec = load_recording(EEGBCI / REPLAY_RUN)
    out = {"acm": EEGBCI / REPLAY_RUN, "mvpformer": MALOW}
    for key, names, up, down, sfreq in (("dbconformer", MONTAGE_22, 25, 16, 250.0),
                                        ("acm1000", list(rec.channels.names), 25, 4, 1000.0)):
        path = work / f"{REPLAY_RUN[:-4]}_{len(names)}ch_{int(sfreq)}Hz_raw.fif"
        if not path.is_file():
            rows = [rec.channels.index(n) for n in names]
            data = resample_poly(rec.data[rows], up, down, axis=1)
            ann = rec.annotations  # onsets relative to the first sample (to_raw has no meas_date)
            ann = mne.Annotations(ann.onset, ann.duration, ann.description)
            sub = Recording(data, sfreq, rec.channels.__class__(names), ann, {})
            sub.to_raw().save(path, overwrite=True, verbose="error")
        out[key] = path
    return out


# -------------------------------------------------------------- processes
def _pin_threads() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # braindecode's montage-name notices
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


def replay_process(path: str, name: str, speed: float, seconds: float | None, loop: bool, queue) -> None:
    """Replay ``path`` on LSL stream ``name`` once a consumer is there; report what was pushed."""
    from realtime import quiet_liblsl

    quiet_liblsl()
    from realtime.replay import Replay

    try:
        player = Replay(path, name, speed=speed, loop=loop, duration_s=seconds, markers=False, wait_for_consumer=120)
        player.run()
        time.sleep(1.0)  # the loop drains the last chunk before the outlet closes
        queue.put(("replay", {"pushed": player.n_pushed}))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        queue.put(("replay", {"error": f"{type(exc).__name__}: {exc}"}))


def loop_process(model_dir: str, name: str, max_s: float, memory_every: float, queue, hop_s=None,
                 gc_control: bool = True) -> None:
    """Decode stream ``name`` until it ends (its outlet closes) or ``max_s``; report telemetry."""
    from realtime import quiet_liblsl

    _pin_threads()
    quiet_liblsl()
    import realtime.decoder
    from realtime.decoder import Decoder, DecoderConfig

    realtime.decoder.GC_CONTROL = gc_control
    try:
        uid = uuid.uuid4().hex[:8]
        cfg = DecoderConfig.load(outlet_name=f"bench-out-{uid}", marker_name=f"bench-mk-{uid}",
                                 resolve_timeout_s=60.0, lost_after_s=30.0, hop_s=hop_s)
        decoder = Decoder(model_dir, name, cfg).open()
        memory = [(0.0, rss_mib())]
        t0 = time.monotonic()
        next_mem = t0 + memory_every
        poll_s = cfg.poll_s
        while time.monotonic() - t0 < max_s:
            got = decoder.inlet.stats.samples
            decoder.poll()
            if decoder.state == "lost" and not decoder.inlet.connected:
                break  # the replay ended: its outlet closed
            now = time.monotonic()
            if now >= next_mem:
                memory.append((now - t0, rss_mib()))
                next_mem = now + memory_every
            if decoder.inlet.stats.samples == got:
                time.sleep(poll_s)
        memory.append((time.monotonic() - t0, rss_mib()))
        summary = decoder.summary()
        decoder.stop()
        summary.update(received=decoder.inlet.stats.samples, memory=memory, wall_s=time.monotonic() - t0)
        queue.put(("loop", summary))
    except BaseException as exc:  # noqa: BLE001
        queue.put(("loop", {"error": f"{type(exc).__name__}: {exc}"}))


def run_case(model_dir: Path, source: Path, *, speed: float, seconds: float | None, loop: bool = False,
             memory_every: float = 5.0, timeout: float = 900.0, hop_s: float | None = None,
             gc_control: bool = True) -> dict:
    """Replay process -> loop process; returns the loop's summary with the replay's counts."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    name = f"bench-src-{uuid.uuid4().hex[:8]}"
    rec_seconds = seconds
    wall = (rec_seconds or 600.0) / speed
    rp = ctx.Process(target=replay_process, args=(str(source), name, speed, seconds, loop, queue), daemon=True)
    lp = ctx.Process(target=loop_process, args=(str(model_dir), name, wall + 120.0, memory_every, queue, hop_s, gc_control),
                    daemon=True)
    rp.start()
    lp.start()
    results = {}
    deadline = time.monotonic() + min(timeout, wall + 300.0)
    while len(results) < 2 and time.monotonic() < deadline:
        try:
            who, value = queue.get(timeout=1.0)
            results[who] = value
        except Exception:  # noqa: BLE001 - queue.Empty
            if not lp.is_alive() and not rp.is_alive() and queue.empty():
                break
    for p in (rp, lp):
        p.join(5.0)
        if p.is_alive():
            p.terminate()
    loop_res, replay_res = results.get("loop", {"error": "no result"}), results.get("replay", {"error": "no result"})
    out = dict(loop_res)
    out["exit_codes"] = (rp.exitcode, lp.exitcode)
    if "error" in replay_res:
        out["error"] = f"replay: {replay_res['error']}" + (f"; loop: {loop_res['error']}" if "error" in loop_res else "")
    else:
        out["pushed"] = replay_res["pushed"]
    return out


def transport_sender(name: str, n_ch: int, sfreq: float, seconds: float, queue) -> None:
    import pylsl

    from realtime import quiet_liblsl

    quiet_liblsl()
    info = pylsl.StreamInfo(name, "EEG", n_ch, sfreq, pylsl.cf_float32, name)
    outlet = pylsl.StreamOutlet(info)
    outlet.wait_for_consumers(60.0)
    x = np.zeros(n_ch, dtype=np.float32)
    n = int(seconds * sfreq)
    t0 = pylsl.local_clock()
    for i in range(n):
        delay = t0 + i / sfreq - pylsl.local_clock()
        if delay > 0:
            time.sleep(delay)
        outlet.push_sample(x, pylsl.local_clock())  # stamped at the push
    time.sleep(0.5)
    queue.put(("sender", n))


def transport_receiver(name: str, poll_s: float, seconds: float, queue) -> None:
    import pylsl

    from realtime import quiet_liblsl
    from realtime.telemetry import LatencyStats

    quiet_liblsl()
    info = pylsl.resolve_byprop("name", name, timeout=60.0)[0]
    inlet = pylsl.StreamInlet(info, recover=False)
    offset = inlet.time_correction(timeout=5.0)
    inlet.open_stream(timeout=5.0)
    dest = np.zeros((1024, info.channel_count()), dtype=np.float32)
    stats = LatencyStats()
    received = 0
    deadline = time.monotonic() + seconds + 30
    while time.monotonic() < deadline:
        try:
            _, ts = inlet.pull_chunk(timeout=0.0, max_samples=1024, dest_obj=dest)
        except pylsl.util.LostError:
            break
        if ts:
            now = pylsl.local_clock()
            for t in ts:
                stats.add(now - (t + offset))
            received += len(ts)
        elif poll_s:
            time.sleep(poll_s)
    queue.put(("receiver", {"received": received, **stats.summary("latency")}))


def run_transport(poll_s: float, seconds: float, n_ch: int = 22, sfreq: float = 250.0) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    name = f"bench-lsl-{uuid.uuid4().hex[:8]}"
    sp = ctx.Process(target=transport_sender, args=(name, n_ch, sfreq, seconds, queue), daemon=True)
    rp = ctx.Process(target=transport_receiver, args=(name, poll_s, seconds, queue), daemon=True)
    sp.start()
    rp.start()
    results = {}
    deadline = time.monotonic() + seconds + 120
    while len(results) < 2 and time.monotonic() < deadline:
        try:
            who, value = queue.get(timeout=1.0)
            results[who] = value
        except Exception:  # noqa: BLE001
            if not sp.is_alive() and not rp.is_alive():
                break
    for p in (sp, rp):
        p.join(5.0)
        if p.is_alive():
            p.terminate()
    out = dict(results.get("receiver", {}))
    out["pushed"] = results.get("sender")
    return out


# ------------------------------------------------------------------ table
def _row(case: str, res: dict, target: str) -> dict:
    if "error" in res:
        return {"case": case, "error": res["error"]}
    pushed, received = res.get("pushed"), res.get("received")
    dropped = (pushed - received if pushed is not None and received is not None else 0) + res.get("dropped_samples", 0)
    return {
        "case": case,
        "path": res.get("path"),
        "decisions": res.get("decisions"),
        "p50_ms": res.get("latency_p50_ms"),
        "p95_ms": res.get("latency_p95_ms"),
        "p99_ms": res.get("latency_p99_ms"),
        "p99.9_ms": res.get("latency_p999_ms"),
        "max_ms": res.get("latency_max_ms"),
        "model_p50_ms": res.get("model_p50_ms"),
        "model_p99_ms": res.get("model_p99_ms"),
        "dropped_windows": res.get("dropped_windows"),
        "samples": received,
        "dropped_samples": dropped,
        "target": target,
    }


def _floor_ratios(rows: list[dict], floor: dict) -> None:
    """Each decoding case's p50 and p99 over the transport floor's (the 1 ms-poll transport)."""
    for row in rows:
        if row.get("decisions") is None or "error" in row:
            continue
        for q in ("p50", "p99"):
            mine, base = row.get(f"{q}_ms"), floor.get(f"{q}_ms")
            row[f"{q}_x_floor"] = round(mine / base, 1) if mine and base else None


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="bci bench latency", description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the table as JSON records")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of signal replayed per case (default 60)")
    parser.add_argument("--speed", type=float, default=1.0, help="replay speed (default real time)")
    parser.add_argument("--models", default="/tmp/bci-bench-latency", help="folder caching the trained models and replayed files")
    parser.add_argument("--cases", default="dbconformer,acm,acm1000,mvpformer,lsl",
                        help="comma-separated subset of dbconformer, acm, acm1000, mvpformer, lsl")
    parser.add_argument("--long", action="store_true", help="instead: 30 min of signal at 20x through the DBConformer loop (memory, drops, crashes)")
    parser.add_argument("--long-minutes", type=float, default=30.0, help=argparse.SUPPRESS)
    parser.add_argument("--hop", type=float, help="seconds between decisions (default: each model's hop)")
    parser.add_argument("--no-gc-control", action="store_true", help="leave the loop's garbage collector alone (A/B)")
    args = parser.parse_args(argv)
    _pin_threads()
    from realtime import quiet_liblsl

    quiet_liblsl()
    root = Path(args.models)
    models = build_models(root / "models")
    sources = build_sources(root / "sources")

    if args.long:
        seconds = args.long_minutes * 60.0
        res = run_case(models["dbconformer"], sources["dbconformer"], speed=20.0, seconds=seconds, loop=True,
                       memory_every=5.0, timeout=seconds / 20.0 + 600, hop_s=args.hop)
        hop = f", hop {args.hop:g} s" if args.hop else ""
        row = _row(f"{args.long_minutes:g} min @ 20x, 22 ch @ 250 Hz, DBConformer{hop}", res, "memory growth < 10%, no drop, no crash")
        if "memory" in res:
            mem = res["memory"]
            warm = next((m for t, m in mem if t >= 0.1 * mem[-1][0]), mem[0][1])
            row.update(rss_start_mb=round(mem[0][1], 1), rss_warm_mb=round(warm, 1), rss_end_mb=round(mem[-1][1], 1),
                       rss_peak_mb=round(max(m for _, m in mem), 1),
                       growth_pct=round(100.0 * (mem[-1][1] - warm) / warm, 2), wall_s=round(res["wall_s"], 1))
        row["exit_codes"] = str(res.get("exit_codes"))
        emit([row], "Long run: live loop memory and drops (replay process -> loop process, LSL loopback)", args.json)
        return [row]

    load_start = os.getloadavg()
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    plan = {
        "dbconformer": ("22 ch @ 250 Hz, DBConformer", "dbconformer", "dbconformer", "p99 <= 10 ms"),
        "acm": ("64 ch @ 160 Hz, ACM(2,2)+TS+SVM", "acm", "acm", "p99 <= 10 ms"),
        "acm1000": ("64 ch @ 1000 Hz, ACM(2,2)+TS+SVM (live resample to 160 Hz)", "acm", "acm1000", "0 dropped samples"),
        "mvpformer": ("21 ch @ 100 Hz, MVPFormer tiny (streaming)", "mvpformer", "mvpformer", "p99 <= 10 ms"),
    }
    rows = []
    for key in wanted:
        if key == "lsl":
            continue
        label, model_key, source_key, target = plan[key]
        print(f"running {label} ({args.seconds:g} s of signal at {args.speed:g}x) ...", flush=True)
        load = os.getloadavg()[0]
        res = run_case(models[model_key], sources[source_key], speed=args.speed, seconds=args.seconds, hop_s=args.hop,
                       gc_control=not args.no_gc_control)
        rows.append({**_row(label, res, target), "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)})
    if "lsl" in wanted:
        n = int(min(args.seconds, 30.0))
        for poll_s, label in ((0.0, "LSL transport only (peer floor), busy poll"), (0.001, "LSL transport only, 1 ms poll (the loop's)")):
            print(f"running {label} ...", flush=True)
            load = os.getloadavg()[0]
            res = run_transport(poll_s, n)
            rows.append({"case": label, "path": "push_sample -> pull_chunk", "decisions": None,
                         "p50_ms": res.get("latency_p50_ms"), "p95_ms": res.get("latency_p95_ms"),
                         "p99_ms": res.get("latency_p99_ms"), "p99.9_ms": res.get("latency_p999_ms"),
                         "max_ms": res.get("latency_max_ms"),
                         "samples": res.get("received"),
                         "dropped_samples": (res["pushed"] - res["received"]) if res.get("pushed") is not None and res.get("received") is not None else None,
                         "target": "~0.3-0.5 ms median", "load_before": round(load, 2),
                         "load_after": round(os.getloadavg()[0], 2)})
        _floor_ratios(rows, rows[-1])
    gc_note = "; GC left alone" if args.no_gc_control else ""
    title = (f"Live loop latency: window's last sample arrival -> result on bci-out "
             f"({args.seconds:g} s of signal per case at {args.speed:g}x; replay and loop in separate processes{gc_note})")
    emit(rows, title, args.json)
    print("load average (1/5/15 min): before " + " ".join(f"{x:.2f}" for x in load_start)
          + ", after " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return rows


if __name__ == "__main__":
    main()
