"""``bci bench device_check``: the MVPA kernels checked and timed on a GPU in one run.

Needs only torch, triton and this repository's ``kernels/`` (and ``bci.errors``);
run it from the repository root as ``python benchmarks/device_check.py [--json PATH]``.
It prints one table in three sections and ends with a non-zero exit status when
a correctness row is outside its tolerance or a check or streaming measurement
raised (timing rows only note their failures, as in :mod:`benchmarks.kernels`).

1. ``correctness``: fresh random inputs at several (B, T, C, heads / KV heads,
   head dim, window) shapes. For the fused Triton kernel (``triton``), the
   PyTorch reference run in the same dtype (``reference``: what a plain PyTorch
   computation achieves) and FlexAttention with the score_mod of the timing rows
   (``flex``, one shape), the relative L2 error ``||x - x64|| / ||x64||`` of the
   output and of the gradients of q, k, v, bias_time and bias_chan against the
   float64 reference on the same (rounded) inputs
   (:func:`kernels.testing.errors_vs_float64`). Tolerance on the largest of the
   six: float32 1e-3, bfloat16 3e-2, float16 1e-2. ``streaming``: one new
   segment through :class:`kernels.MVPAKVCache` vs. the full recompute, largest
   absolute difference over the appended segments (float32 1e-4, bfloat16 6e-2).
2. ``timing`` (CUDA only): bf16 forward and forward+backward of ``ours``
   (Triton), the ``reference``, compiled FlexAttention (``flex``) and SDPA with
   the flash backend (``sdpa``: token-causal, no relative terms; the floor) at
   the benchmark shapes of :mod:`benchmarks.kernels` (C in 22/64/128 x T in
   25/64/110, 12/4 heads of dim 64, batch 1): CUDA-event medians after warm-up,
   TFLOP/s, peak memory, and the FLOP and byte floors (:func:`benchmarks.kernels.measure`).
   Rows still pending when ``--budget-s`` is spent are listed as skipped.
3. ``streaming``: latency of one new segment at C = 128, T = 25 through the
   KV-cache path (:mod:`kernels.streaming`) vs. recomputing all T * C tokens:
   one attention layer (:func:`benchmarks.kernels.measure_streaming`) and an
   MVPFormer-S sized stack of 12 parallel blocks (projections, bias tables,
   attention, SwiGLU).

``--tiny`` (CPU; Triton interpreter, ``TRITON_INTERPRET=1``, set here when
Triton is not yet imported): tiny shapes, float32 and float16 (the interpreter
multiplies the raw bit patterns of bf16 in ``tl.dot``, triton-lang/triton#11584),
FlexAttention eager and forward only (it has no CPU backward); no timings;
section 3 at the ``tiny`` preset to exercise the code, not as a measurement.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a script: the repository root, not benchmarks/, goes first on sys.path
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import os
import time
import warnings
from datetime import date
from functools import partial

import torch
from torch import nn

from bci.errors import BCIError
from benchmarks.common import emit
from benchmarks.kernels import SHAPES, WINDOW, flex_callable, measure, measure_streaming, time_ms

#: (B, T, C, H, Hkv, D, window): GQA and not, windows shorter and longer than T, padded channel tiles
GPU_SHAPES = [(2, 25, 22, 12, 4, 64, 10), (1, 12, 64, 12, 4, 64, 3), (1, 6, 128, 4, 4, 128, 2),
              (1, 30, 7, 4, 2, 32, 10), (1, 25, 128, 12, 4, 64, 10)]
TINY_SHAPES = [(1, 5, 3, 2, 1, 16, 1), (2, 6, 5, 4, 2, 32, 2), (1, 20, 2, 2, 2, 16, 1), (1, 4, 4, 2, 2, 64, 10)]
#: the FlexAttention score_mod is checked at the first benchmark shape (batch 1, as timed)
FLEX_SHAPE = {"gpu": (1, 25, 22, 12, 4, 64, WINDOW), "tiny": TINY_SHAPES[0]}
TOLERANCE = {"float32": 1e-3, "bfloat16": 3e-2, "float16": 1e-2}
STREAMING_TOLERANCE = {"float32": 1e-4, "bfloat16": 6e-2}
#: (B, C, H, Hkv, D, window, max_segments, n_steps) of the streaming correctness rows
STREAMING_CASE = {"gpu": (2, 64, 12, 4, 64, WINDOW, 25, 30), "tiny": (2, 3, 4, 2, 16, 1, 3, 5)}
#: models/mvpformer.py PRESETS (not importable here: that module needs braindecode);
#: tests/test_device_check.py checks that they agree
MVPFORMER = {"S": dict(d_model=768, n_layers=12, n_heads=12, n_head_kv=4, d_inner=1728),
             "tiny": dict(d_model=64, n_layers=2, n_heads=4, n_head_kv=2, d_inner=128)}
TIMED_IMPLS = ("ours", "sdpa", "reference", "flex")


def failure(err):
    """The note of a row whose computation raised (the run goes on; the row counts as failed)."""
    return f"failed: {type(err).__name__}: {str(err).splitlines()[0][:100]}"


def correctness_rows(shape, names, dtype_name, device, compiled_flex):
    """One row per implementation in ``names``: relative errors vs. float64, tolerance, pass."""
    from kernels import mvpa_attention
    from kernels.testing import errors_vs_float64

    B, T, C, H, Hkv, D, window = shape
    attentions = {"triton": partial(mvpa_attention, backend="triton"),
                  "reference": partial(mvpa_attention, backend="reference")}
    if "flex" in names:
        flex = flex_callable(C, T, device, window=window, compiled=compiled_flex)
        attentions["flex"] = lambda q, k, v, bt, bc, n_channels, window: flex(q, k, v, bt, bc)
    base = {"section": "correctness", "impl": None, "dtype": dtype_name, "B": B, "T": T, "C": C, "H": H,
            "Hkv": Hkv, "D": D, "window": window}
    grads = device.type == "cuda" or "flex" not in names  # FlexAttention has no CPU backward
    try:
        with warnings.catch_warnings():  # eager FlexAttention warns that it is unfused
            warnings.simplefilter("ignore", UserWarning)
            errors = errors_vs_float64({n: attentions[n] for n in names}, shape, getattr(torch, dtype_name),
                                       device, grads)
    except Exception as err:  # report it as a failed row, keep going
        return [{**base, "impl": name, "max_err": None, "tol": TOLERANCE[dtype_name], "ok": False,
                 "note": failure(err)} for name in names]
    rows = []
    for name in names:
        worst = max(errors[name].values())
        note = "" if grads else "forward only (no CPU backward)"
        if name == "flex":
            note = ("compiled; " if compiled_flex else "eager; ") + note
        rows.append({**base, "impl": name, **errors[name], "max_err": worst, "tol": TOLERANCE[dtype_name],
                     "ok": worst < TOLERANCE[dtype_name], "note": note.rstrip("; ")})
    return rows


def streaming_correctness_row(case, dtype_name, device):
    """One new segment through the KV cache (Triton) vs. the full recompute (reference)."""
    from kernels.testing import streaming_vs_full

    B, C, H, Hkv, D, window, max_segments, n_steps = case
    row = {"section": "correctness", "impl": "streaming", "dtype": dtype_name, "B": B, "T": max_segments, "C": C,
           "H": H, "Hkv": Hkv, "D": D, "window": window}
    try:
        worst = streaming_vs_full(B, C, H, Hkv, D, window, max_segments, n_steps, getattr(torch, dtype_name),
                                  device, backend="triton")
    except Exception as err:
        return {**row, "max_err": None, "tol": STREAMING_TOLERANCE[dtype_name], "ok": False, "note": failure(err)}
    return {**row, "max_err": worst, "tol": STREAMING_TOLERANCE[dtype_name],
            "ok": worst < STREAMING_TOLERANCE[dtype_name],
            "note": f"max |segment - full recompute| over {n_steps} appended segments (cache of T)"}


class StackBlock(nn.Module):
    """A parallel MVPFormer block ``x + attn(RMSNorm(x)) + SwiGLU(RMSNorm(x))`` with random weights.

    The per-token work of ``models.mvpformer.MVPABlock`` (GQA projections, bias
    tables from fixed codebook keys, MVPA, output projection, SwiGLU) without
    braindecode; the attention is a callable so the same block runs the
    streaming and the full path.
    """

    def __init__(self, d_model, n_heads, n_head_kv, d_inner, n_segments, n_channels):
        super().__init__()
        self.n_heads, self.n_head_kv = n_heads, n_head_kv
        head_dim = d_model // n_heads
        self.norm = nn.RMSNorm(d_model, eps=1e-5)
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.kv_proj = nn.Linear(d_model, 2 * n_head_kv * head_dim, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        self.gate = nn.Linear(d_model, d_inner, bias=False)
        self.up = nn.Linear(d_model, d_inner, bias=False)
        self.down = nn.Linear(d_inner, d_model, bias=False)
        self.time_keys = nn.Parameter(torch.randn(n_heads, n_segments, head_dim) / head_dim**0.5)
        self.chan_keys = nn.Parameter(torch.randn(n_heads, n_channels, head_dim) / head_dim**0.5)

    def forward(self, x, attend):
        """``x (B, n, d_model)``; ``attend(q, k, v, bias_time, bias_chan) -> (B, H, n, head_dim)``."""
        h = self.norm(x)
        q = self.q_proj(h).unflatten(-1, (self.n_heads, -1)).transpose(1, 2)
        k, v = (y.unflatten(-1, (self.n_head_kv, -1)).transpose(1, 2) for y in self.kv_proj(h).chunk(2, dim=-1))
        bias_time = torch.einsum("bhnd,htd->bhnt", q, self.time_keys)
        bias_chan = torch.einsum("bhnd,hcd->bhnc", q, self.chan_keys)
        out = attend(q, k, v, bias_time, bias_chan).transpose(1, 2).flatten(2)
        return x + self.out_proj(out) + self.down(nn.functional.silu(self.gate(h)) * self.up(h))


def _cached_attention(cache, q, k, v, bias_time, bias_chan):
    cache.append(k, v)
    return cache.attend(q, bias_time, bias_chan)


def measure_stack_streaming(preset, C, T, dtype, device, reps):
    """Per-segment latency of a layer stack through the KV caches vs. the stack over all tokens."""
    from kernels import MVPAKVCache, mvpa_attention, select_backend

    dims = MVPFORMER[preset]
    gen = torch.Generator(device=device).manual_seed(0)
    torch.manual_seed(0)
    blocks = [StackBlock(dims["d_model"], dims["n_heads"], dims["n_head_kv"], dims["d_inner"], T, C)
              .to(device=device, dtype=dtype) for _ in range(dims["n_layers"])]
    kv_shape = (1, dims["n_head_kv"], C, dims["d_model"] // dims["n_heads"])
    caches = [MVPAKVCache(n_channels=C, max_segments=T) for _ in blocks]
    for cache in caches:  # a full context: each step drops the oldest segment
        for _ in range(T):
            cache.append(*(torch.randn(kv_shape, generator=gen, device=device, dtype=dtype) for _ in range(2)))
    x_new = torch.randn(1, C, dims["d_model"], generator=gen, device=device, dtype=dtype)
    x_all = torch.randn(1, T * C, dims["d_model"], generator=gen, device=device, dtype=dtype)
    full_attention = partial(mvpa_attention, n_channels=C, window=WINDOW)

    def step():
        x = x_new
        for block, cache in zip(blocks, caches):
            x = block(x, partial(_cached_attention, cache))
        return x

    def full():
        x = x_all
        for block in blocks:
            x = block(x, full_attention)
        return x

    with torch.no_grad():
        segment_ms = time_ms(step, device, reps * 4)
        full_ms = time_ms(full, device, reps)
    return {"section": "streaming", "impl": select_backend(device, "auto"), "C": C, "T": T, "N": C * T,
            "dtype": str(dtype).replace("torch.", ""), "layers": dims["n_layers"], "d_model": dims["d_model"],
            "segment_ms": segment_ms, "full_recompute_ms": full_ms, "speedup": full_ms / segment_ms,
            "note": f"MVPFormer-{preset} stack (heads {dims['n_heads']}/{dims['n_head_kv']}, d_inner "
                    f"{dims['d_inner']}): one new segment incl. projections and SwiGLU"}


def timing_rows(shapes, reps, deadline):
    """Section 2 (CUDA): ``benchmarks.kernels.measure`` rows; those past ``deadline`` are skipped."""
    device = torch.device("cuda")
    rows = []
    for impl in TIMED_IMPLS:  # cheapest first: FlexAttention compiles once per shape
        for C, T in shapes:
            if time.monotonic() > deadline:
                rows.append({"impl": impl, "C": C, "T": T, "N": C * T, "dtype": "bfloat16",
                             "note": "skipped: time budget (--budget-s) spent"})
                continue
            if impl == "sdpa":
                from torch.nn.attention import SDPBackend, sdpa_kernel

                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    row = measure(impl, C, T, torch.bfloat16, device, reps, seed=0)
                row["note"] += "; flash backend"
            else:
                row = measure(impl, C, T, torch.bfloat16, device, reps, seed=0)
            row.pop("bench")
            rows.append(row)
    rows.sort(key=lambda row: (row["C"], row["T"], TIMED_IMPLS.index(row["impl"])))
    return [{"section": "timing", **row} for row in rows]


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the three sections; print the table (JSON with ``--json``); raise if a row failed."""
    parser = argparse.ArgumentParser(prog="bci bench device_check", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the rows as a JSON list of records")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny shapes; without CUDA: CPU under the Triton interpreter, no timings")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions, median reported (default 20)")
    parser.add_argument("--budget-s", type=float, default=270.0,
                        help="seconds after the start when pending timing rows are skipped (default 270)")
    args = parser.parse_args(argv)
    started = time.monotonic()

    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    if not on_gpu and not args.tiny:
        raise BCIError("device_check: no CUDA device; run it on a GPU, or with --tiny on CPU (Triton interpreter)")
    if not on_gpu and "triton" not in sys.modules:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import triton

    mode = "tiny" if args.tiny else "gpu"
    reps = args.reps or (20 if on_gpu else 2)
    rows = []
    # 1. correctness
    half = "bfloat16" if on_gpu else "float16"
    for shape in TINY_SHAPES if args.tiny else GPU_SHAPES:
        for dtype_name in ("float32", half):
            rows += correctness_rows(shape, ("triton", "reference"), dtype_name, device, compiled_flex=on_gpu)
    if not on_gpu:
        rows.append({"section": "correctness", "impl": "triton", "dtype": "bfloat16",
                     "note": "skipped: no CUDA; the Triton interpreter has no bf16 tl.dot "
                             "(triton-lang/triton#11584), fp16 checked instead"})
    for dtype_name in ("float32", half) if on_gpu else ("float32",):
        rows += correctness_rows(FLEX_SHAPE[mode], ("flex",), dtype_name, device, compiled_flex=on_gpu)
    for dtype_name in ("float32", "bfloat16") if on_gpu else ("float32",):
        rows.append(streaming_correctness_row(STREAMING_CASE[mode], dtype_name, device))
    # 3. streaming (before the timings, whose budget may run out)
    C, T = (128, 25) if not args.tiny else (4, 3)
    dtype = torch.bfloat16 if on_gpu else torch.float32
    streaming = []
    for measure_row, note in ((partial(measure_streaming, seed=0), "one attention layer (heads 12/4, dim 64)"),
                              (partial(measure_stack_streaming, "tiny" if args.tiny else "S"), None)):
        try:
            row = {"section": "streaming", **measure_row(C, T, dtype, device, reps)}
            row.pop("bench", None)
            row["note"] = note or row["note"]
        except Exception as err:
            row = {"section": "streaming", "C": C, "T": T, "ok": False, "note": failure(err)}
        if not on_gpu:
            row["note"] += "; CPU, tiny: exercises the path, not a measurement"
        streaming.append(row)
    # 2. timings
    if on_gpu:
        rows += timing_rows(SHAPES["small" if args.tiny else "full"], reps, started + args.budget_s)
    else:
        rows.append({"section": "timing", "impl": ",".join(TIMED_IMPLS), "note": "skipped: no CUDA"})
    rows += streaming

    name = torch.cuda.get_device_name(device) if on_gpu else "CPU (Triton interpreter)"
    title = (f"MVPA device check on {name}: torch {torch.__version__}, triton {triton.__version__}, "
             f"{date.today().isoformat()}, {time.monotonic() - started:.0f} s; errors are relative L2 vs. float64 "
             "except streaming (max abs)")
    emit(rows, title, args.json, group="section")
    failed = [row for row in rows if row.get("ok") is False]
    if failed:
        raise BCIError(f"device_check: {len(failed)} row(s) failed or out of tolerance: " + "; ".join(
            f"{row['section']} {row.get('impl')} {row.get('dtype')} T={row['T']} C={row['C']} "
            f"max_err={row.get('max_err')}" for row in failed))
    return rows


if __name__ == "__main__":
    try:
        main()
    except BCIError as err:
        sys.exit(f"error: {err}")
