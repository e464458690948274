"""Scale-out: evaluation cells on Dask, MVPFormer pretraining under torchrun (loopback only).

- ``bci evaluate --cluster``: a 2-worker LocalCluster gives the serial run's
  results.csv (same rows, same scores, same order) and resumes an interrupted file; a
  worker process killed while it runs a cell still leaves every row exactly once.
- ``torchrun --nproc_per_node=2 -m bci.cli pretrain`` (gloo, CPU): every DDP step
  equals one process averaging the losses of the two ranks' batches (loss curve and
  parameters, float tolerance); a run killed after a checkpoint and resumed reproduces
  the uninterrupted loss curve; FSDP2 sharding gives the same steps as DDP.
"""

from __future__ import annotations

import copy
import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from bci.config import Config, validate
from bci.errors import ConfigError
from bci.evaluate import RESULT_COLUMNS, THREAD_ENV, evaluate, parse_cluster
from bci.report import ResultsFile

ROOT = Path(__file__).resolve().parents[1]
TIMING = ["time", "fit_time", "predict_time"]  # wall-clock columns: differ run to run


# ------------------------------------------------------------------ Dask: units
def test_parse_cluster():
    assert parse_cluster("local:2") == ("local", 2)
    assert parse_cluster("tcp://10.0.0.5:8786") == ("address", "tcp://10.0.0.5:8786")
    assert parse_cluster("local")[1] >= 1
    for bad in ("local:0", "local:x", "8786", "tcp://"):
        with pytest.raises(ConfigError, match="expected local:N"):
            parse_cluster(bad)


def test_unreachable_scheduler_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import socket

    import bci.evaluate as ev
    from bci.cli import main

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(ev, "CONNECT_TIMEOUT", "1s")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_cfg_dict()))
    t0 = time.monotonic()
    assert main(["evaluate", str(cfg), "--out", str(tmp_path / "o"), "--cluster", f"tcp://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --cluster: cannot reach the Dask scheduler") and "Traceback" not in err
    assert time.monotonic() - t0 < 60


def test_results_file_writes_a_cell_once_and_reorders(tmp_path):
    def rows(subject, pipeline, score):
        return [{**dict.fromkeys(RESULT_COLUMNS, ""), "dataset": "D", "subject": subject, "session": "s",
                 "pipeline": pipeline, "score": score}]  # fmt: skip

    results = ResultsFile(tmp_path / "results.csv", RESULT_COLUMNS)
    results.append(rows(2, "B", 0.5))
    results.append(rows(1, "A", 0.75))
    results.append(rows(2, "B", 0.9))  # the same cell again (a retried task): dropped
    again = ResultsFile(tmp_path / "results.csv", RESULT_COLUMNS)  # a resumed run knows both cells
    assert again.finished("D", 1, "A") and again.finished("D", 2, "B")
    again.append(rows(1, "A", 0.1))
    frame = again.read()
    assert frame.score.tolist() == [0.5, 0.75]
    again.reorder([("D", "1", "A"), ("D", "2", "B")])
    assert again.read().subject.tolist() == [1, 2]
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 3


# ------------------------------------------------------------ Dask: real data
PIPELINES = ["moabb_mdm", "moabb_ts_svm"]  # fast Riemannian pipelines (MDM; TS+SVM with a C/kernel grid)


def _cfg_dict():
    return {
        "name": "distributed",
        "seed": 11,
        "datasets": [{"name": "PhysionetMI", "subjects": [1, 2], "params": {"imagined": True}}],
        "paradigm": {"name": "LeftRightImagery", "params": {"fmin": 8, "fmax": 30,
                     "channels": ["FC3", "FC4", "C5", "C3", "C1", "Cz", "C2", "C4", "C6", "CP3", "CP4"]}},
        "evaluation": {"kind": "cross_run"},
        "pipelines": PIPELINES,
    }  # fmt: skip


def _cfg(tmp_path):
    return validate(Config(_cfg_dict(), tmp_path / "cfg.yaml"))


@pytest.fixture(scope="module")
def serial(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("serial")
    evaluate(_cfg(out), out, progress=False)
    return out / "results.csv"


def _without_timing(path):
    return pd.read_csv(path).drop(columns=TIMING)


@pytest.mark.slow
def test_local_cluster_gives_the_serial_results_and_resumes(tmp_path, serial):
    # an interrupted sweep: the first cell is already in the file
    lines = serial.read_text().splitlines(keepends=True)
    (tmp_path / "results.csv").write_text("".join(lines[:2]))
    frame = evaluate(_cfg(tmp_path), tmp_path, progress=False, cluster="local:2")
    assert len(frame) == 4
    pd.testing.assert_frame_equal(_without_timing(tmp_path / "results.csv"), _without_timing(serial))
    text = (tmp_path / "results.csv").read_text().splitlines(keepends=True)
    assert text[:2] == lines[:2]  # the finished cell was not recomputed
    assert (tmp_path / "summary.md").stat().st_size > 0


@pytest.mark.slow
def test_killed_worker_still_every_row_exactly_once(tmp_path, serial):
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, env=dict(THREAD_ENV),
                           dashboard_address=None)  # fmt: skip
    client = Client(cluster, set_as_default=False)
    try:
        pids = client.run(os.getpid)
        outcome: dict = {}

        def run():
            try:
                outcome["frame"] = evaluate(_cfg(tmp_path), tmp_path, progress=False, cluster=cluster.scheduler_address)
            except BaseException as exc:  # reported by the test thread
                outcome["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        killed = None
        deadline = time.monotonic() + 120
        while killed is None and thread.is_alive() and time.monotonic() < deadline:
            for address, keys in client.processing().items():
                cells = [k for k in keys if str(k).startswith("cell-")]
                if cells and address in pids:
                    os.kill(pids[address], signal.SIGKILL)  # a worker dies in the middle of a cell
                    killed = (address, cells[0])
                    break
            time.sleep(0.005)
        thread.join(timeout=240)
        assert not thread.is_alive(), "evaluation did not finish within 240 s"
        assert "error" not in outcome, outcome.get("error")
        assert killed is not None, "no cell was seen running on a worker"
        assert set(client.run(os.getpid).values()) != set(pids.values())  # the nanny restarted it
    finally:
        client.close()
        cluster.close()
    got = pd.read_csv(tmp_path / "results.csv")
    assert not got.duplicated(["dataset", "subject", "pipeline"]).any()
    pd.testing.assert_frame_equal(got.drop(columns=TIMING), _without_timing(serial))


# ------------------------------------------------------------- torchrun / DDP
MODEL = {"size": "tiny", "drop_prob": 0.1}
TRAIN = dict(batch_size=2, lr=3e-3, seed=5, weight_decay=0.01)


def _pretrain_config(path: Path, data_dir: Path, *, steps: int, strategy: str = "ddp") -> Path:
    bonn = sorted((data_dir / "seizure/bonn/A_Z").glob("*.txt"))[:4] + sorted((data_dir / "seizure/bonn/E_S").glob("*.txt"))[:4]
    cfg = {
        "seed": 0,
        "pretrain": {
            "recordings": [str(p) for p in bonn] + [str(data_dir / "seizure/malow")],
            "preprocessing": {"bandpass": [0.5, 30]},
            "sfreq": 64, "segment_seconds": 1.0, "window_segments": 4, "hop_segments": 4,
            "max_windows_per_recording": 2, "normalize": "zscore", "model": MODEL,
            "steps": steps, "batch_size": TRAIN["batch_size"], "lr": TRAIN["lr"], "seed": TRAIN["seed"],
            "weight_decay": TRAIN["weight_decay"], "checkpoint_every": 3, "strategy": strategy, "device": "cpu",
        },
    }  # fmt: skip
    path.write_text(yaml.safe_dump(cfg))
    return path


def _torchrun(config: Path, out: Path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "bci.cli", "pretrain", str(config), "--out", str(out), "--no-progress"]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_tree(proc):
    """SIGKILL torchrun and its workers (each in a session of its own), by pid."""
    import psutil

    try:
        procs = psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


def _finish(proc, timeout=300):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        raise
    assert proc.returncode == 0, out[-3000:]
    return out


def _losses(path: Path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [int(r["step"]) for r in rows], np.array([float(r["loss"]) for r in rows])


def _emulate(windows, model_config, steps, world=2):
    """One process doing what ``world`` DDP ranks do: each rank's batch and dropout
    stream, the mean of their losses, one AdamW step. Returns losses and parameters."""
    from models.mvpformer import MVPFormer
    from models.pretrain import ChannelCountBatchSampler, WindowDataset, contrastive_loss

    torch.manual_seed(TRAIN["seed"])
    model = MVPFormer(**model_config)
    model.final_layer.requires_grad_(False)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=TRAIN["lr"], weight_decay=TRAIN["weight_decay"])
    data = WindowDataset(windows)
    samplers = [ChannelCountBatchSampler(data.shapes, TRAIN["batch_size"], seed=TRAIN["seed"], rank=r, world_size=world)
                for r in range(world)]  # fmt: skip
    rng = [torch.get_rng_state() for _ in range(world)]
    losses, states, epoch = [], {}, 0
    while len(losses) < steps:
        for s in samplers:
            s.set_epoch(epoch)
        for batches in zip(*samplers):
            parts = []
            for r, batch in enumerate(batches):
                torch.set_rng_state(rng[r])
                pred, target = model.forward_pretrain(torch.stack([data[i] for i in batch]))
                parts.append(contrastive_loss(pred, target, 0.1))
                rng[r] = torch.get_rng_state()
            loss = sum(parts) / world
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            states[len(losses)] = copy.deepcopy(model.state_dict())
            if len(losses) == steps:
                break
        epoch += 1
    return np.array(losses), states


def _assert_same_params(saved: Path, expected: dict):
    state = torch.load(saved, map_location="cpu", weights_only=True)
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, rtol=1e-4, atol=2e-5, msg=key)


@pytest.fixture(scope="module")
def windows_and_model(tmp_path_factory, data_dir):
    from bci.config import load_config
    from bci.pretraining import pretrain_windows, validate_pretrain_section

    path = _pretrain_config(tmp_path_factory.mktemp("cfg") / "p.yaml", data_dir, steps=1)
    cfg = load_config(path)
    data = pretrain_windows(cfg, validate_pretrain_section(cfg))
    assert {w.shape[0] for w in data.windows} == {1, 21}  # mixed channel counts
    return data.windows, {**MODEL, "segment_len": data.segment_len}


@pytest.mark.slow
def test_torchrun_ddp_equals_one_process_and_resumes_after_kill(tmp_path, data_dir, windows_and_model):
    steps = 18
    expected_losses, expected_states = _emulate(*windows_and_model, steps)
    out = tmp_path / "run"
    # a long run, killed (every process, SIGKILL) once its first checkpoint is on disk
    proc = _torchrun(_pretrain_config(tmp_path / "long.yaml", data_dir, steps=10_000), out)
    deadline = time.monotonic() + 240
    while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    _kill_tree(proc)
    proc.communicate(timeout=60)
    assert (out / "checkpoint.pt").exists(), "the run ended before its first checkpoint"
    killed_at = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert 3 <= killed_at < steps

    # resumed with the same command and the uninterrupted run's step count
    log = _finish(_torchrun(_pretrain_config(tmp_path / "p.yaml", data_dir, steps=steps), out))
    assert f"steps {killed_at} -> {steps}" in log and "2 process(es), ddp" in log
    got_steps, got = _losses(out / "loss.csv")
    assert got_steps == list(range(1, steps + 1))
    np.testing.assert_allclose(got, expected_losses, rtol=2e-5)
    _assert_same_params(out / "model.pt", expected_states[steps])
    assert (out / "loss.png").stat().st_size > 1000


@pytest.mark.slow
def test_torchrun_fsdp_steps_equal_ddp(tmp_path, data_dir, windows_and_model):
    steps = 4
    expected_losses, expected_states = _emulate(*windows_and_model, steps)
    out = tmp_path / "fsdp"
    log = _finish(_torchrun(_pretrain_config(tmp_path / "f.yaml", data_dir, steps=steps, strategy="fsdp"), out))
    assert "2 process(es), fsdp" in log
    np.testing.assert_allclose(_losses(out / "loss.csv")[1], expected_losses, rtol=2e-5)
    _assert_same_params(out / "model.pt", expected_states[steps])  # full, unsharded weights
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["strategy"] == "fsdp" and ckpt["world_size"] == 2 and len(ckpt["rng_ranks"]) == 2


# ------------------------------------------------------------- bci pretrain input
def test_pretrain_bad_config_is_a_one_line_error(tmp_path, data_dir, capsys):
    from bci.cli import main

    def run(**changes):
        cfg = yaml.safe_load(_pretrain_config(tmp_path / "c.yaml", data_dir, steps=1).read_text())
        cfg["pretrain"].update(changes)
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
        code = main(["pretrain", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o"), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and "Traceback" not in err, err
        return err

    assert "pretrain.strategy: expected one of ddp, fsdp, found 'zero'" in run(strategy="zero")
    assert "pretrain.window_segments: expected an integer >= 2" in run(window_segments=1)
    assert "pretrain.bogus: unknown key" in run(bogus=1)
    # a Bonn segment (23.6 s) is shorter than one 30 s window
    assert "shorter than one pretraining window" in run(window_segments=30)
    assert not (tmp_path / "o" / "checkpoint.pt").exists()
