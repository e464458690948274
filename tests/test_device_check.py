"""``benchmarks/device_check.py`` in ``--tiny`` mode: CPU, Triton interpreter, every check passing.

The script is what runs on a GPU when one is lent; running its CPU mode here keeps
it from rotting between those runs. ``TRITON_INTERPRET=1`` must be set before
Triton is imported, so it runs in a subprocess (as it is run on the GPU: a script
from the repository root), with CUDA hidden.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import device_check
from bci.errors import BCIError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    pytest.importorskip("triton")
    out = tmp_path_factory.mktemp("device_check") / "rows.json"
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "benchmarks/device_check.py", "--tiny", "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


@pytest.mark.slow
def test_tiny_correctness_rows_all_pass(tiny_run):
    _, rows = tiny_run
    checked = [row for row in rows if row["section"] == "correctness" and "ok" in row]
    assert checked and all(row["ok"] is True for row in checked), [r for r in checked if not r["ok"]]
    kernel_rows = {(row["impl"], row["dtype"], row["T"], row["C"]) for row in checked}
    for B, T, C, H, Hkv, D, window in device_check.TINY_SHAPES:
        for impl in ("triton", "reference"):
            for dtype in ("float32", "float16"):
                assert (impl, dtype, T, C) in kernel_rows
    for row in checked:
        assert row["max_err"] < row["tol"] and isinstance(row["max_err"], float)
        if row["impl"] in ("triton", "reference"):  # forward and all five gradients
            assert max(row[name] for name in ("out", "dq", "dk", "dv", "d_bias_time", "d_bias_chan")) \
                == row["max_err"]
    assert {row["impl"] for row in checked} == {"triton", "reference", "flex", "streaming"}


@pytest.mark.slow
def test_tiny_states_what_it_skipped_and_runs_streaming(tiny_run):
    stdout, rows = tiny_run
    for section in ("correctness", "timing", "streaming"):
        assert f"[section: {section}]" in stdout
    assert "triton" in stdout.splitlines()[0]
    skipped = [row for row in rows if row.get("note", "").startswith("skipped")]
    assert {(row["section"], row["dtype"] if "dtype" in row else None) for row in skipped} == {
        ("correctness", "bfloat16"), ("timing", None)}
    streaming = [row for row in rows if row["section"] == "streaming"]
    assert len(streaming) == 2 and all(row["segment_ms"] > 0 and row["full_recompute_ms"] > 0 for row in streaming)


def test_mvpformer_dims_match_the_model_presets():
    mvpformer = pytest.importorskip("models.mvpformer")
    for name, dims in device_check.MVPFORMER.items():
        assert dims == mvpformer.PRESETS[name]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_full_mode_needs_cuda():
    with pytest.raises(BCIError, match="--tiny"):
        device_check.main([])


@pytest.mark.skipif(torch.cuda.is_available(), reason="runs the CPU mode in-process")
def test_a_row_out_of_tolerance_fails_the_run(monkeypatch, capsys):
    """Only the eager FlexAttention row is checked (no Triton kernel runs), against a tolerance of 0."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(device_check, "TINY_SHAPES", [])
    monkeypatch.setattr(device_check, "TOLERANCE", dict.fromkeys(device_check.TOLERANCE, 0.0))
    monkeypatch.setattr(device_check, "streaming_correctness_row",
                        lambda case, dtype, device: {"section": "correctness", "impl": "streaming", "ok": True})
    with pytest.raises(BCIError, match="1 row"):
        device_check.main(["--tiny"])
    assert "[section: correctness]" in capsys.readouterr().out
