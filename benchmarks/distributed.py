"""Evaluation sweep wall time: the serial path against Dask LocalClusters of 1 and 2 workers.

One fixed sweep (PhysionetMI left/right imagery, cross-run, 11 sensorimotor channels;
default subjects 1-4 x five CPU-bound Riemannian pipelines, ours and MOABB's, the
600-point ACM grid among them) runs once per mode, each a fresh ``bci evaluate``
process writing into a fresh folder, as a user runs it:

* ``serial-1thread``: no ``--cluster``, BLAS/OpenMP limited to one thread by the
  environment (``OMP_NUM_THREADS=1`` ...): the single-core baseline;
* ``serial``: no ``--cluster``, library default threads (only with ``--modes``; on a
  loaded machine multithreaded BLAS can be many times slower);
* ``local:1``, ``local:2``: ``--cluster local:N``, N single-threaded worker processes.

Wall time includes everything a user waits for: imports, cluster start, data loading,
cells and the report. Also printed: CPU seconds of the process and its workers and the
mean number of cores they got (CPU / wall), the summed fit+predict seconds of the cells, whether
the scores equal the first mode's, and the 1-minute load average before and after each
run (the machine may be shared: read the speed-ups with it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PIPELINES = ["acm_ts_svm_grid", "acm_ts_svm_auto", "moabb_ts_svm", "ts_svm", "moabb_mdm"]
CHANNELS = ["FC3", "FC4", "C5", "C3", "C1", "Cz", "C2", "C4", "C6", "CP3", "CP4"]
MODES = ["serial-1thread", "local:1", "local:2"]


def sweep_config(subjects: list[int], pipelines: list[str]) -> dict:
    return {
        "name": "distributed benchmark sweep",
        "seed": 42,
        "datasets": [{"name": "PhysionetMI", "subjects": subjects, "params": {"imagined": True}}],
        "paradigm": {"name": "LeftRightImagery", "params": {"fmin": 8, "fmax": 30, "channels": CHANNELS}},
        "evaluation": {"kind": "cross_run"},
        "pipelines": pipelines,
    }


def run_mode(mode: str, config: Path, out: Path, timeout: float) -> tuple[float, float]:
    """Wall and CPU seconds of one ``bci evaluate`` process (and its workers) in ``mode``."""
    from bci.evaluate import THREAD_ENV

    env = dict(os.environ)
    cmd = [sys.executable, "-m", "bci.cli", "evaluate", str(config), "--out", str(out), "--no-progress"]
    if mode == "serial-1thread":
        env.update(THREAD_ENV)
    elif mode != "serial":
        cmd += ["--cluster", mode]
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{mode}: bci evaluate failed: {done.stderr[-2000:]}")
    # CPU seconds of the process and every descendant it reaped (workers, nannies)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="bci bench distributed", description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", default="1-4", help="PhysionetMI subjects (default 1-4)")
    parser.add_argument("--pipelines", default=",".join(PIPELINES), help="pipeline names, comma-separated")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from serial, {', '.join(MODES)}")
    parser.add_argument("--quick", action="store_true", help="subjects 1-2, three fast pipelines")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per mode")
    parser.add_argument("--json", help="write the table as JSON records")
    args = parser.parse_args(argv)
    os.environ.setdefault("MNE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mne_data"))
    import pandas as pd
    import yaml

    from bci.cli import parse_subjects
    from benchmarks.common import emit

    subjects = [1, 2] if args.quick else parse_subjects(args.subjects)
    pipelines = ["moabb_ts_svm", "ts_svm", "moabb_mdm"] if args.quick else args.pipelines.split(",")
    rows, reference = [], None
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        config = Path(tmp) / "sweep.yaml"
        config.write_text(yaml.safe_dump(sweep_config(subjects, pipelines)))
        for mode in args.modes.split(","):
            out = Path(tmp) / mode.replace(":", "")
            load_before = os.getloadavg()[0]
            wall, cpu = run_mode(mode, config, out, args.timeout)
            frame = pd.read_csv(out / "results.csv")
            scores = frame.set_index(["subject", "pipeline"]).score.sort_index()
            reference = scores if reference is None else reference
            rows.append({
                "mode": mode,
                "cells": len(frame),
                "wall_ms": round(wall * 1000),
                "cpu_ms": round(cpu * 1000),
                "cores_used": round(cpu / wall, 2),
                "cells_fit_predict_ms": round(float((frame.fit_time + frame.predict_time).sum()) * 1000),
                "speedup": None,
                "scores_equal": bool(scores.equals(reference)),
                "load_1min_before": round(load_before, 2),
                "load_1min_after": round(os.getloadavg()[0], 2),
            })  # fmt: skip
    for row in rows:
        row["speedup"] = round(rows[0]["wall_ms"] / row["wall_ms"], 2)
    title = (
        f"Evaluation sweep: PhysionetMI subjects {subjects[0]}-{subjects[-1]} x {len(pipelines)} pipelines "
        f"(cross-run), speed-up vs {rows[0]['mode']} ({os.cpu_count()} cores; nice {os.nice(0)})"
    )
    emit(rows, title, args.json)
    return rows


if __name__ == "__main__":
    main()
