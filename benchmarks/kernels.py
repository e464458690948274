"""``bci bench kernels``: MVPA attention, ours vs. its peers, plus streaming latency.

For each token grid (C channels x T segments, N = T*C; MVPFormer-S heads: 12
query / 4 key-value heads of dim 64; batch 1) it measures forward and
forward+backward time, achieved TFLOP/s and peak memory of

- ``ours``: the fused Triton kernel (:mod:`kernels.triton_mvpa`), GPU only;
- ``reference``: the materialising PyTorch definition (:mod:`kernels.reference`);
- ``braindecode``: braindecode's ``_MVPAttention`` module (its own q/k/v/relative
  projections and output projection included, so it does slightly more work);
- ``flex``: ``torch.compile(flex_attention)`` with an equivalent ``score_mod``
  (window, time and channel terms gathered from the same bias tables) and a
  segment-causal block mask, GPU only;
- ``sdpa``: ``scaled_dot_product_attention`` with a token-causal mask and no
  relative terms: the lower bound for any MVPA kernel.

Beside the measurements it prints the two floors of MVPA at that size:
the arithmetic (``flop_floor_*``: 2*D FLOPs per visible (query, key) pair for
``p @ v`` plus 2*D per pair inside the content window for ``q.k``; the backward
does ``dV``, ``dP`` on every visible pair and ``dQ``, ``dK`` on content pairs)
and the memory traffic (``byte_floor_*``: reading the inputs and bias tables
once, writing the outputs/gradients once). ``*_tflops`` are floor FLOPs per
second for the MVPA rows and SDPA's own causal FLOPs for ``sdpa``.

Streaming rows: latency of appending one segment to a KV cache of T-1 segments
and attending (``segment_ms``) vs. recomputing the forward over all N tokens
(``full_recompute_ms``), both with the backend the device gets.

On CPU only the reference, braindecode and SDPA rows run (small shapes); the
GPU-only rows are listed as skipped.

``--model S`` measures the whole network instead: an MVPFormer of the published size
(``S``: 73.6M parameters, 5 s segments of 2560 samples, a context of 110 segments) written
with random weights by braindecode's own ``save_pretrained`` into a hub-layout folder
(config.json + model.safetensors, as ``hf download`` leaves a published checkpoint) and
loaded by :func:`models.hub.load_pretrained`, streamed on ``--channels`` (default 21 and
84) at ``--contexts`` segments (default the model's ``max_segments``). Per row: the
cached step (:meth:`models.mvpformer.MVPFormer.step`, cache full, one new segment) p50/p99
over ``--steps`` segments, and the full recompute of the context (the forward over all its
segments, what a model without a cache runs for every segment) p50/p99 over
``--full-reps``; the peak resident memory above the start of each (Linux's high-water mark,
:func:`benchmarks.common.peak_rss_mib`; CPU PyTorch keeps no allocator statistics) and the
key/value cache's size. A full recompute whose attention scores alone would pass
``--max-gib`` (the reference kernel materialises about three ``heads x N x N`` float32
tensors at once) is not run and its estimate is given instead.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import emit, peak_rss_mib

HEADS, KV_HEADS, HEAD_DIM, WINDOW = 12, 4, 64, 10
SHAPES = {
    "full": [(C, T) for C in (22, 64, 128) for T in (25, 64, 110)],
    "small": [(C, T) for C in (8, 22) for T in (5, 12)],
}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def pair_counts(C, T, window):
    """(visible pairs, content pairs) per head: segment-causal, content inside the window or last segment."""
    visible = C * C * T * (T + 1) // 2
    content = 0
    for t in range(T):
        seen = t + 1 if t == T - 1 else min(t, window) + 1
        content += C * C * seen
    return visible, content


def mvpa_floors(C, T, window, heads, kv_heads, head_dim, elem_bytes, batch=1):
    """FLOP and byte floors of MVPA forward and forward+backward."""
    N = C * T
    visible, content = pair_counts(C, T, window)
    fwd_flops = batch * heads * 2 * head_dim * (visible + content)
    bwd_flops = batch * heads * 2 * head_dim * (2 * visible + 2 * content)
    qo = batch * heads * N * head_dim * elem_bytes
    kv = batch * kv_heads * N * head_dim * elem_bytes
    tables = batch * heads * N * (T + C) * elem_bytes
    fwd_bytes = 2 * qo + 2 * kv + tables
    bwd_bytes = 4 * qo + 4 * kv + 2 * tables  # read q, o, dO, k, v, tables; write dq, dk, dv, d tables
    return fwd_flops, fwd_flops + bwd_flops, fwd_bytes, fwd_bytes + bwd_bytes


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device, reps, warmup=2):
    """Median time of ``fn`` in milliseconds: CUDA events on a GPU, the wall clock on CPU."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def peak_mib(fn, device):
    """Peak extra device memory of one call in MiB (CUDA only)."""
    if device.type != "cuda":
        return None
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    _sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def make_inputs(C, T, dtype, device, seed):
    """Fresh random MVPA inputs (requires_grad) and an output gradient."""
    gen = torch.Generator(device=device).manual_seed(seed)
    N = C * T

    def randn(*shape):
        return torch.randn(shape, generator=gen, device=device, dtype=dtype).requires_grad_()

    inputs = [randn(1, HEADS, N, HEAD_DIM), randn(1, KV_HEADS, N, HEAD_DIM), randn(1, KV_HEADS, N, HEAD_DIM),
              randn(1, HEADS, N, T), randn(1, HEADS, N, C)]
    return inputs, torch.randn(1, HEADS, N, HEAD_DIM, generator=gen, device=device, dtype=dtype)


def mvpa_callable(backend, C, T):
    from kernels import mvpa_attention

    def run(q, k, v, bt, bc):
        return mvpa_attention(q, k, v, bt, bc, n_channels=C, window=WINDOW, backend=backend)

    return run


def flex_callable(C, T, device, window=WINDOW, compiled=True):
    """FlexAttention computing MVPA through a score_mod over the same bias tables.

    ``compiled=False`` runs FlexAttention eagerly (it materialises the scores; on
    CPU forward only): how the score_mod is checked without a GPU.
    """
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    N = C * T
    if compiled:
        # every shape compiles anew (static shapes, and C, T, window are constants of the score_mod);
        # past dynamo's limit of 8 compiles per function it would silently run FlexAttention eagerly
        torch._dynamo.reset()
    attend = torch.compile(flex_attention, dynamic=False) if compiled else flex_attention
    block_mask = create_block_mask(lambda b, h, q_idx, kv_idx: kv_idx // C <= q_idx // C,
                                   None, None, N, N, device=device)

    def run(q, k, v, bt, bc):
        scale = 1.0 / math.sqrt(q.shape[-1])

        def score_mod(score, b, h, q_idx, kv_idx):
            t_q, t_k = q_idx // C, kv_idx // C
            content = (t_q - t_k <= window) | (t_q == T - 1)
            rel = bt[b, h, q_idx, torch.clamp(t_q - t_k, min=0)] + bc[b, h, q_idx, torch.abs(q_idx % C - kv_idx % C)]
            return scale * (torch.where(content, score, 0.0) + rel)

        return attend(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=1.0, enable_gqa=True)

    return run


def sdpa_callable():
    import torch.nn.functional as F

    def run(q, k, v, bt, bc):
        group = q.shape[1] // k.shape[1]
        return F.scaled_dot_product_attention(q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1),
                                              is_causal=True)

    return run


def braindecode_module(dtype, device):
    from braindecode.models.mvpformer import _MVPAttention

    return _MVPAttention(HEADS * HEAD_DIM, HEADS, KV_HEADS, True, WINDOW).to(device=device, dtype=dtype)


def measure(impl, C, T, dtype, device, reps, seed):
    """One row: forward and forward+backward time, TFLOP/s and peak memory of ``impl``."""
    N = C * T
    elem = torch.finfo(dtype).bits // 8
    fwd_flops, all_flops, fwd_bytes, all_bytes = mvpa_floors(C, T, WINDOW, HEADS, KV_HEADS, HEAD_DIM, elem)
    row = {"bench": "attention", "impl": impl, "C": C, "T": T, "N": N, "dtype": str(dtype).replace("torch.", ""),
           "fwd_ms": None, "fwdbwd_ms": None, "fwd_tflops": None, "fwdbwd_tflops": None, "peak_mib": None,
           "flop_floor_fwd_gflop": fwd_flops / 1e9, "flop_floor_fwdbwd_gflop": all_flops / 1e9,
           "byte_floor_fwd_mb": fwd_bytes / 1e6, "byte_floor_fwdbwd_mb": all_bytes / 1e6, "note": ""}
    inputs, grad_out = make_inputs(C, T, dtype, device, seed)
    if impl == "braindecode":
        module = braindecode_module(dtype, device)
        gen = torch.Generator(device=device).manual_seed(seed)
        d_model = HEADS * HEAD_DIM
        x = torch.randn(1, T, C, d_model, generator=gen, device=device, dtype=dtype, requires_grad=True)
        pos = torch.randn(1, T, d_model, generator=gen, device=device, dtype=dtype)
        chan = torch.randn(1, C, d_model, generator=gen, device=device, dtype=dtype)
        grad_bd = torch.randn(1, T, C, d_model, generator=gen, device=device, dtype=dtype)

        def forward():
            return module(x, pos, chan)

        def backward_args(out):
            return out, grad_bd

        row["note"] = "module incl. projections"
    else:
        fn = {"ours": lambda: mvpa_callable("triton", C, T), "reference": lambda: mvpa_callable("reference", C, T),
              "flex": lambda: flex_callable(C, T, device), "sdpa": sdpa_callable}[impl]()

        def forward():
            return fn(*inputs)

        def backward_args(out):
            return out, grad_out

        if impl == "sdpa":
            fwd_flops = 4 * HEAD_DIM * HEADS * N * (N + 1) // 2
            all_flops = fwd_flops * 7 // 2
            row["note"] = "token-causal, no relative terms"

    def forward_backward():
        out, grad = backward_args(forward())
        out.backward(grad)

    try:
        with torch.no_grad():
            row["fwd_ms"] = time_ms(forward, device, reps)
        row["fwdbwd_ms"] = time_ms(forward_backward, device, reps)
        row["peak_mib"] = peak_mib(forward_backward, device)
    except torch.OutOfMemoryError:
        row["note"] = (row["note"] + "; out of memory").lstrip("; ")
    except Exception as err:  # a peer failing (compile, unsupported dtype) must not stop the table
        row["note"] = (row["note"] + f"; failed: {type(err).__name__}: {str(err).splitlines()[0][:80]}").lstrip("; ")
    if row["fwd_ms"]:
        row["fwd_tflops"] = fwd_flops / row["fwd_ms"] / 1e9
    if row["fwdbwd_ms"]:
        row["fwdbwd_tflops"] = all_flops / row["fwdbwd_ms"] / 1e9
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def measure_streaming(C, T, dtype, device, reps, seed):
    """Per-segment latency of the KV-cache path vs. a full forward recompute."""
    from kernels import MVPAKVCache, mvpa_attention, select_backend

    backend = select_backend(device, "auto")
    inputs, _ = make_inputs(C, T, dtype, device, seed)
    q, k, v, bt, bc = (x.detach() for x in inputs)
    cache = MVPAKVCache(n_channels=C, max_segments=T)
    for t in range(T):
        cache.append(k[:, :, t * C:(t + 1) * C], v[:, :, t * C:(t + 1) * C])
    last = slice((T - 1) * C, T * C)
    k_new, v_new = k[:, :, last], v[:, :, last]

    def step():  # the cache is full: append drops the oldest segment, then the new queries attend
        cache.append(k_new, v_new)
        return cache.attend(q[:, :, last], bt[:, :, last], bc[:, :, last])

    def full():
        return mvpa_attention(q, k, v, bt, bc, n_channels=C, window=WINDOW, backend=backend)

    with torch.no_grad():
        segment_ms = time_ms(step, device, reps * 4)
        full_ms = time_ms(full, device, reps)
    return {"bench": "streaming", "impl": backend, "C": C, "T": T, "N": C * T,
            "dtype": str(dtype).replace("torch.", ""), "segment_ms": segment_ms, "full_recompute_ms": full_ms,
            "speedup": full_ms / segment_ms, "note": "MVPFormer-S heads, one new segment"}


def hub_layout_model(size: str, folder: Path, seed: int):
    """Our MVPFormer of ``size`` with random weights, loaded by :func:`models.hub.load_pretrained`
    from the hub-layout folder braindecode's ``save_pretrained`` writes in ``folder``; and the
    loader's ``info``."""
    from braindecode.models import MVPFormer as BraindecodeMVPFormer

    from models.hub import load_pretrained
    from models.mvpformer import PRESETS

    torch.manual_seed(seed)
    segment_len = 2560  # the published checkpoints: 5 s segments at 512 Hz
    BraindecodeMVPFormer(n_outputs=2, n_chans=1, n_times=2 * segment_len, sfreq=512.0, segment_len=segment_len,
                         **PRESETS[size]).save_pretrained(folder)  # fmt: skip
    return load_pretrained(str(folder), local_files_only=True)


def _percentiles(times: list[float]) -> tuple[float, float]:
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def measure_model_streaming(model, C, context, steps, full_reps, max_gib, seed):
    """One row: the cached step vs the full recompute of ``context`` segments on ``C`` channels."""
    gen = torch.Generator().manual_seed(seed)
    segments = torch.randn(context + steps, 1, C, model.segment_len, generator=gen)
    state = model.init_stream(C, context=context)
    with torch.no_grad():
        for t in range(context):  # fill the cache (its first steps attend to fewer segments)
            model.step(state, segments[t])

        def stream():
            times = []
            for t in range(context, context + steps):  # cache full: the oldest segment leaves
                start = time.perf_counter()
                model.step(state, segments[t])
                times.append((time.perf_counter() - start) * 1e3)
            return times

        step_times, step_peak = peak_rss_mib(stream)
        cache_mib = sum(k.nbytes + v.nbytes for c in state.caches for k, v in [c.keys_values()]) / 2**20
        N = C * context
        heads = model.blocks[0].attn.n_heads
        estimate_gib = 3 * heads * N * N * 4 / 2**30
        full_times, full_peak = [], None
        if estimate_gib <= max_gib:
            window = segments[steps:].permute(1, 2, 0, 3).reshape(1, C, context * model.segment_len)

            def full():
                times = []
                for _ in range(full_reps):
                    start = time.perf_counter()
                    model(window)
                    times.append((time.perf_counter() - start) * 1e3)
                return times

            full_times, full_peak = peak_rss_mib(full)
    step_p50, step_p99 = _percentiles(step_times)
    full_p50, full_p99 = _percentiles(full_times) if full_times else (None, None)
    return {
        "bench": "model_streaming", "C": C, "T": context, "N": N, "threads": torch.get_num_threads(),
        "segment_p50_ms": step_p50, "segment_p99_ms": step_p99, "segments_timed": steps,
        "full_recompute_p50_ms": full_p50, "full_recompute_p99_ms": full_p99, "full_reps": len(full_times),
        "speedup_p50": full_p50 / step_p50 if full_p50 else None,
        "segment_peak_mib": step_peak, "full_peak_mib": full_peak, "kv_cache_mib": cache_mib,
        "note": "" if full_times else f"full recompute not run: scores alone ~{estimate_gib:.1f} GiB > --max-gib {max_gib:g}",
    }  # fmt: skip


def model_streaming(args) -> list[dict]:
    """``--model``: the rows of :func:`measure_model_streaming` for every channel count and context."""
    from kernels import select_backend

    with tempfile.TemporaryDirectory(prefix="mvpformer-hub-") as folder:
        model, info = hub_layout_model(args.model, Path(folder), args.seed)
    rows = []
    for context in [int(c) for c in args.contexts.split(",")] if args.contexts else [model.max_segments]:
        for C in (int(c) for c in args.channels.split(",")):
            rows.append(measure_model_streaming(model, C, context, args.steps, args.full_reps, args.max_gib, args.seed))
    title = (f"MVPFormer-{args.model} streaming vs full recompute on cpu ({info['n_parameters'] / 1e6:.1f}M parameters, "
             f"hub-layout checkpoint with random weights, segment {model.segment_len} samples, batch 1, fp32, "
             f"attention backend {select_backend(torch.device('cpu'), model.backend)})")  # fmt: skip
    emit(rows, title, args.json)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the kernel benchmark; print the table (and write JSON with ``--json``); return its rows."""
    parser = argparse.ArgumentParser(prog="bci bench kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the rows as a JSON list of records")
    parser.add_argument("--shapes", choices=sorted(SHAPES), default=None,
                        help="token grids: full (C in 22/64/128 x T in 25/64/110) or small; "
                             "default full on a GPU, small on CPU")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default bf16 on GPU, fp32 on CPU")
    parser.add_argument("--device", default=None, help="default cuda when available, else cpu")
    parser.add_argument("--impls", default="ours,reference,braindecode,flex,sdpa",
                        help="comma-separated subset of ours,reference,braindecode,flex,sdpa")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", choices=["tiny", "S"], default=None,
                        help="measure the whole network of this size streaming vs full recompute instead (CPU)")
    parser.add_argument("--channels", default="21,84", help="with --model: comma-separated channel counts")
    parser.add_argument("--contexts", default=None, help="with --model: segments of context (default max_segments)")
    parser.add_argument("--steps", type=int, default=30, help="with --model: timed streaming segments")
    parser.add_argument("--full-reps", type=int, default=2, help="with --model: timed full recomputes")
    parser.add_argument("--max-gib", type=float, default=8.0,
                        help="with --model: skip a full recompute whose attention scores would need more")
    args = parser.parse_args(argv)
    if args.model:
        return model_streaming(args)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = device.type == "cuda"
    dtype = DTYPES[args.dtype or ("bf16" if on_gpu else "fp32")]
    shapes = SHAPES[args.shapes or ("full" if on_gpu else "small")]
    reps = args.reps or (20 if on_gpu else 3)
    impls = [name.strip() for name in args.impls.split(",") if name.strip()]
    gpu_only = {"ours", "flex"}

    rows = []
    for C, T in shapes:
        for impl in impls:
            if impl in gpu_only and not on_gpu:
                continue
            rows.append(measure(impl, C, T, dtype, device, reps, args.seed))
        rows.append(measure_streaming(C, T, dtype, device, reps, args.seed))
    title = f"MVPA attention on {device.type} ({str(dtype).replace('torch.', '')}, heads {HEADS}/{KV_HEADS}, " \
            f"head dim {HEAD_DIM}, window {WINDOW}, batch 1)"
    skipped = sorted(gpu_only & set(impls)) if not on_gpu else []
    if skipped:
        title += f"; skipped without a GPU: {', '.join(skipped)}"
    emit(rows, title, args.json)
    return rows


if __name__ == "__main__":
    main()
