"""Fused MVPA attention in Triton: forward, backward, launch wrappers, autograd.

Computes exactly :func:`kernels.reference.mvpa_attention_reference` (see that
module for the definition and the token layout ``n = t * C + c``) without ever
storing the ``N x N`` score matrix, FlashAttention-2 style (Dao, 2023): each
program keeps a block of queries and runs an online softmax over key tiles in
fp32, storing only the output and the per-row log-sum-exp for the backward.

Tiling
    *Queries* are blocks of ``BLOCK_M`` consecutive tokens (they may straddle
    segments). *Keys* are segment-aligned tiles: ``SEGS`` whole time segments of
    ``C`` channels, each padded to ``C_PAD = next_pow2(C)`` columns, so a tile
    has ``BLOCK_N = SEGS * C_PAD`` columns and column ``j`` holds key time
    ``seg0 + j // C_PAD`` and channel ``j % C_PAD`` (padding columns masked).
    This alignment makes every relative term cheap:

    - time term: ``bias_time[n, t_q - t_k]`` is gathered per (row, column) from
      the query's own row of ``T`` entries (L1/L2 resident); its gradient is a
      sum over the ``C_PAD`` columns of each segment (a reshape + sum) stored
      straight to ``d bias_time[n, t_q - t_k]`` (each distance once per row);
    - channel term: the column-to-channel map is the same in every tile, so
      ``bias_chan[n, |c_q - c_k|]`` is gathered once per query block and kept in
      registers; its gradient is accumulated per column in registers across
      all tiles and reduced to per-key-channel sums at the end (the wrapper folds
      key channels ``c_q -/+ d`` into distances ``d``, an ``O(N C)`` op).

What is skipped
    - Causal: key tiles after the last segment of a query block are never
      visited (the loop ends at that segment); inside the diagonal tiles keys
      with ``t' > t`` are masked to ``-inf``.
    - Content window: key tiles whose segments are all more than ``window``
      segments before *every* query of the block (and the block has no
      last-segment query) run without the ``q.k`` dot product - only the
      relative terms and ``p @ v``. In the backward the same holds for the
      ``dK``/``dV`` programs, which also skip the ``dK`` update there.

Backward
    Two kernels plus one torch reduction (``delta = rowsum(dO * O)``):
    ``_mvpa_bwd_dq_kernel`` (per query block: ``dQ``, ``d bias_time`` and the
    per-key-channel sums for ``d bias_chan``; rows are owned by one program, so
    no atomics) and ``_mvpa_bwd_dkdv_kernel`` (per key tile and KV head: loops
    over the ``G`` query heads of the group and the causal query blocks, so GQA
    never materialises repeated K/V and ``dK``/``dV`` need no atomics either).

Precision
    bf16/fp16/fp32 inputs; dot products accumulate in fp32 (fp32 inputs use
    IEEE fp32 dots, not TF32); softmax statistics in fp32 with ``exp2``.
    Head dims must be powers of two from 16 to 256 (32/64/128 are the model's),
    ``C <= 128`` (the channel tile is one register block; MVPFormer's channel
    codebook has 128 entries). On CPU tensors the kernels run only under the
    Triton interpreter (``TRITON_INTERPRET=1`` set before ``triton`` is
    imported); :mod:`kernels.dispatch` enforces that.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from bci.errors import ModelError

LOG2E = 1.4426950408889634
MAX_CHANNELS = 128


@triton.jit
def _fwd_tile(
    acc, l_i, m_i, q, k_base, v_base, bt_rows, bc_term, t_q, is_last, row_ok, seg0,
    T, C, WINDOW, qk_scale, offs_j, offs_c, offs_d,
    CONTENT: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """One key tile of the online softmax (log2 domain)."""
    t_k = seg0 + offs_j
    key_ok = (t_k < T) & (offs_c < C)
    offs_n = t_k * C + offs_c
    k = tl.load(k_base + offs_n[:, None] * BLOCK_D + offs_d[None, :], mask=key_ok[:, None], other=0.0)
    v = tl.load(v_base + offs_n[:, None] * BLOCK_D + offs_d[None, :], mask=key_ok[:, None], other=0.0)
    dt = t_q[:, None] - t_k[None, :]
    # padding rows (row_ok false) keep finite scores so their softmax never divides 0 by 0
    visible = key_ok[None, :] & (dt >= 0)
    s = tl.load(bt_rows[:, None] + dt, mask=visible & row_ok[:, None], other=0.0).to(tl.float32) + bc_term
    if CONTENT:
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)
        in_window = (dt <= WINDOW) | is_last[:, None]
        s += tl.where(in_window, qk, 0.0)
    s = tl.where(visible, s * qk_scale, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
    return acc, l_i, m_new


@triton.jit
def _mvpa_fwd_kernel(
    Q, K, V, BT, BC, O, LSE,
    stride_kb, stride_kh, stride_vb, stride_vh,
    qk_scale, Nq, N, T, C, WINDOW, Q_OFF, H, G,
    BLOCK_M: tl.constexpr, SEGS: tl.constexpr, C_PAD: tl.constexpr,
    BLOCK_D: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """Forward: queries ``Q_OFF + [0, Nq)`` of one (batch, head) against all ``N`` keys.

    K/V may be views with any batch/head strides (the streaming cache passes a
    slice of its buffer); tokens and features must be contiguous.
    """
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    hk = ((bh % H) // G).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < Nq
    t_q = (Q_OFF + offs_m) // C
    c_q = (Q_OFF + offs_m) % C
    is_last = t_q == T - 1
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, SEGS * C_PAD)
    offs_j = offs_n // C_PAD
    offs_c = offs_n % C_PAD

    q = tl.load(Q + bh.to(tl.int64) * Nq * BLOCK_D + offs_m[:, None] * BLOCK_D + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    k_base = K + b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh
    bt_rows = BT + bh.to(tl.int64) * Nq * T + offs_m * T
    bc_rows = BC + bh.to(tl.int64) * Nq * C + offs_m * C
    bc_term = tl.load(bc_rows[:, None] + tl.abs(c_q[:, None] - offs_c[None, :]),
                      mask=row_ok[:, None] & (offs_c < C)[None, :], other=0.0).to(tl.float32)

    t_first = (Q_OFF + pid_m * BLOCK_M) // C
    t_end = tl.minimum((Q_OFF + pid_m * BLOCK_M + BLOCK_M - 1) // C + 1, T)
    far_end = tl.maximum(t_first - WINDOW, 0) * (t_end < T).to(tl.int32)
    far_end = (far_end // SEGS) * SEGS

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for seg0 in range(0, far_end, SEGS):
        acc, l_i, m_i = _fwd_tile(acc, l_i, m_i, q, k_base, v_base, bt_rows, bc_term, t_q, is_last,
                                  row_ok, seg0, T, C, WINDOW, qk_scale, offs_j, offs_c, offs_d,
                                  False, BLOCK_D, DOT_PREC)
    for seg0 in range(far_end, t_end, SEGS):
        acc, l_i, m_i = _fwd_tile(acc, l_i, m_i, q, k_base, v_base, bt_rows, bc_term, t_q, is_last,
                                  row_ok, seg0, T, C, WINDOW, qk_scale, offs_j, offs_c, offs_d,
                                  True, BLOCK_D, DOT_PREC)
    acc = acc / l_i[:, None]
    tl.store(O + bh.to(tl.int64) * Nq * BLOCK_D + offs_m[:, None] * BLOCK_D + offs_d[None, :],
             acc.to(O.dtype.element_ty), mask=row_ok[:, None])
    tl.store(LSE + bh.to(tl.int64) * Nq + offs_m, m_i + tl.log2(l_i), mask=row_ok)


@triton.jit
def _bwd_dq_tile(
    dq, dchan, q, do, lse, delta, k_base, v_base, bt_rows, dbt_rows, bc_term, t_q, is_last, row_ok,
    seg0, T, C, WINDOW, qk_scale, scale, offs_j, offs_c, offs_d,
    CONTENT: tl.constexpr, SEGS: tl.constexpr, C_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """One key tile of the query-side backward: dQ, d bias_time, per-column dS sums."""
    t_k = seg0 + offs_j
    key_ok = (t_k < T) & (offs_c < C)
    offs_n = t_k * C + offs_c
    k = tl.load(k_base + offs_n[:, None] * BLOCK_D + offs_d[None, :], mask=key_ok[:, None], other=0.0)
    v = tl.load(v_base + offs_n[:, None] * BLOCK_D + offs_d[None, :], mask=key_ok[:, None], other=0.0)
    dt = t_q[:, None] - t_k[None, :]
    visible = row_ok[:, None] & key_ok[None, :] & (dt >= 0)
    s = tl.load(bt_rows[:, None] + dt, mask=visible, other=0.0).to(tl.float32) + bc_term
    if CONTENT:
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)
        in_window = (dt <= WINDOW) | is_last[:, None]
        s += tl.where(in_window, qk, 0.0)
    s = tl.where(visible, s * qk_scale, float("-inf"))
    p = tl.exp2(s - lse[:, None])
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
    # gradient w.r.t. the unscaled sum (w * q.k + bias_time + bias_chan)
    ds = p * (dp - delta[:, None]) * scale
    if CONTENT:
        dq += tl.dot(tl.where(in_window, ds, 0.0).to(k.dtype), k, input_precision=DOT_PREC)
    dchan += ds
    seg = seg0 + tl.arange(0, SEGS)
    d_time = tl.sum(tl.reshape(ds, (BLOCK_M, SEGS, C_PAD)), axis=2)
    dist = t_q[:, None] - seg[None, :]
    tl.store(dbt_rows[:, None] + dist, d_time, mask=row_ok[:, None] & (dist >= 0) & (seg < T)[None, :])
    return dq, dchan


@triton.jit
def _mvpa_bwd_dq_kernel(
    Q, K, V, BT, BC, DO, LSE, DELTA, DQ, DBT, DBC_KEY,
    qk_scale, scale, N, T, C, WINDOW, H, G,
    BLOCK_M: tl.constexpr, SEGS: tl.constexpr, C_PAD: tl.constexpr,
    BLOCK_D: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """Query-side backward of one (query block, batch, head).

    Writes ``dQ``, ``d bias_time`` (by distance) and ``DBC_KEY[n, c']``: the sum
    of the score gradients of query ``n`` over keys of channel ``c'``.
    """
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    bkv = (bh // H) * (H // G) + (bh % H) // G
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < N
    t_q = offs_m // C
    c_q = offs_m % C
    is_last = t_q == T - 1
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, SEGS * C_PAD)
    offs_j = offs_n // C_PAD
    offs_c = offs_n % C_PAD

    row_base = bh.to(tl.int64) * N
    q = tl.load(Q + (row_base + offs_m[:, None]) * BLOCK_D + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + (row_base + offs_m[:, None]) * BLOCK_D + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + row_base + offs_m, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + row_base + offs_m, mask=row_ok, other=0.0)
    k_base = K + bkv.to(tl.int64) * N * BLOCK_D
    v_base = V + bkv.to(tl.int64) * N * BLOCK_D
    bt_rows = BT + (row_base + offs_m) * T
    dbt_rows = DBT + (row_base + offs_m) * T
    bc_term = tl.load(BC + (row_base + offs_m[:, None]) * C + tl.abs(c_q[:, None] - offs_c[None, :]),
                      mask=row_ok[:, None] & (offs_c < C)[None, :], other=0.0).to(tl.float32)

    t_first = (pid_m * BLOCK_M) // C
    t_end = tl.minimum((pid_m * BLOCK_M + BLOCK_M - 1) // C + 1, T)
    far_end = tl.maximum(t_first - WINDOW, 0) * (t_end < T).to(tl.int32)
    far_end = (far_end // SEGS) * SEGS

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    dchan = tl.zeros([BLOCK_M, SEGS * C_PAD], dtype=tl.float32)
    for seg0 in range(0, far_end, SEGS):
        dq, dchan = _bwd_dq_tile(dq, dchan, q, do, lse, delta, k_base, v_base, bt_rows, dbt_rows, bc_term,
                                 t_q, is_last, row_ok, seg0, T, C, WINDOW, qk_scale, scale, offs_j, offs_c,
                                 offs_d, False, SEGS, C_PAD, BLOCK_M, BLOCK_D, DOT_PREC)
    for seg0 in range(far_end, t_end, SEGS):
        dq, dchan = _bwd_dq_tile(dq, dchan, q, do, lse, delta, k_base, v_base, bt_rows, dbt_rows, bc_term,
                                 t_q, is_last, row_ok, seg0, T, C, WINDOW, qk_scale, scale, offs_j, offs_c,
                                 offs_d, True, SEGS, C_PAD, BLOCK_M, BLOCK_D, DOT_PREC)
    tl.store(DQ + (row_base + offs_m[:, None]) * BLOCK_D + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=row_ok[:, None])
    d_key_chan = tl.sum(tl.reshape(dchan, (BLOCK_M, SEGS, C_PAD)), axis=1)
    offs_cc = tl.arange(0, C_PAD)
    tl.store(DBC_KEY + (row_base + offs_m[:, None]) * C + offs_cc[None, :], d_key_chan,
             mask=row_ok[:, None] & (offs_cc < C)[None, :])


@triton.jit
def _bwd_dkdv_tile(
    dk, dv, k, v, t_k, key_ok, offs_c, start_m, Q, DO, LSE, DELTA, BT, BC, bh,
    N, T, C, WINDOW, qk_scale, scale, offs_d,
    CONTENT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """One query block of the key-side backward: accumulates dK (content) and dV."""
    offs_m = start_m + tl.arange(0, BLOCK_M)
    row_ok = offs_m < N
    t_q = offs_m // C
    c_q = offs_m % C
    row_base = bh.to(tl.int64) * N
    q = tl.load(Q + (row_base + offs_m[:, None]) * BLOCK_D + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + (row_base + offs_m[:, None]) * BLOCK_D + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + row_base + offs_m, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + row_base + offs_m, mask=row_ok, other=0.0)
    dt = t_q[:, None] - t_k[None, :]
    visible = row_ok[:, None] & key_ok[None, :] & (dt >= 0)
    s = tl.load(BT + (row_base + offs_m[:, None]) * T + dt, mask=visible, other=0.0).to(tl.float32)
    s += tl.load(BC + (row_base + offs_m[:, None]) * C + tl.abs(c_q[:, None] - offs_c[None, :]),
                 mask=visible, other=0.0).to(tl.float32)
    if CONTENT:
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)
        in_window = (dt <= WINDOW) | (t_q == T - 1)[:, None]
        s += tl.where(in_window, qk, 0.0)
    s = tl.where(visible, s * qk_scale, float("-inf"))
    p = tl.exp2(s - lse[:, None])
    dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=DOT_PREC)
    if CONTENT:
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
        ds = tl.where(in_window, p * (dp - delta[:, None]) * scale, 0.0)
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=DOT_PREC)
    return dk, dv


@triton.jit
def _mvpa_bwd_dkdv_kernel(
    Q, K, V, BT, BC, DO, LSE, DELTA, DK, DV,
    qk_scale, scale, N, T, C, WINDOW, H, G,
    BLOCK_M: tl.constexpr, SEGS: tl.constexpr, C_PAD: tl.constexpr,
    BLOCK_D: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """Key-side backward of one (key tile, batch, KV head) over its ``G`` query heads."""
    pid_n = tl.program_id(0)
    bkv = tl.program_id(1)
    hkv_count = H // G
    b = bkv // hkv_count
    hk = bkv % hkv_count
    seg0 = pid_n * SEGS
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, SEGS * C_PAD)
    offs_c = offs_n % C_PAD
    t_k = seg0 + offs_n // C_PAD
    key_ok = (t_k < T) & (offs_c < C)
    key_rows = bkv.to(tl.int64) * N + t_k * C + offs_c
    k = tl.load(K + key_rows[:, None] * BLOCK_D + offs_d[None, :], mask=key_ok[:, None], other=0.0)
    v = tl.load(V + key_rows[:, None] * BLOCK_D + offs_d[None, :], mask=key_ok[:, None], other=0.0)

    seg_last = tl.minimum(seg0 + SEGS, T) - 1
    start_lo = (seg0 * C // BLOCK_M) * BLOCK_M
    near_hi = tl.minimum((seg_last + WINDOW + 1) * C, N)
    near_hi = (near_hi + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    last_lo = ((T - 1) * C // BLOCK_M) * BLOCK_M
    tail_lo = tl.maximum(near_hi, last_lo)

    dk = tl.zeros([SEGS * C_PAD, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([SEGS * C_PAD, BLOCK_D], dtype=tl.float32)
    for g in range(0, G):
        bh = b * H + hk * G + g
        for start_m in range(start_lo, near_hi, BLOCK_M):
            dk, dv = _bwd_dkdv_tile(dk, dv, k, v, t_k, key_ok, offs_c, start_m, Q, DO, LSE, DELTA, BT, BC, bh,
                                    N, T, C, WINDOW, qk_scale, scale, offs_d, True, BLOCK_M, BLOCK_D, DOT_PREC)
        for start_m in range(near_hi, last_lo, BLOCK_M):
            dk, dv = _bwd_dkdv_tile(dk, dv, k, v, t_k, key_ok, offs_c, start_m, Q, DO, LSE, DELTA, BT, BC, bh,
                                    N, T, C, WINDOW, qk_scale, scale, offs_d, False, BLOCK_M, BLOCK_D, DOT_PREC)
        for start_m in range(tail_lo, N, BLOCK_M):
            dk, dv = _bwd_dkdv_tile(dk, dv, k, v, t_k, key_ok, offs_c, start_m, Q, DO, LSE, DELTA, BT, BC, bh,
                                    N, T, C, WINDOW, qk_scale, scale, offs_d, True, BLOCK_M, BLOCK_D, DOT_PREC)
    tl.store(DK + key_rows[:, None] * BLOCK_D + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=key_ok[:, None])
    tl.store(DV + key_rows[:, None] * BLOCK_D + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=key_ok[:, None])


def _config(n_channels, head_dim, device, dtype):
    """Block sizes and launch options: ``(BLOCK_M, SEGS, C_PAD, num_warps, num_stages)``.

    Under the CPU interpreter the smallest blocks ``tl.dot`` accepts (16) keep
    the emulation fast. On the GPU key tiles hold at least 64 columns for half
    types; fp32 (IEEE dots, twice the bytes per tile) uses 32-row query
    blocks, 32-column key tiles and a single pipeline stage so every kernel
    fits the 227 KiB of shared memory of an H100 (checked by compiling for
    sm_90 ahead of time).
    """
    if head_dim < 16 or head_dim > 256 or head_dim & (head_dim - 1):
        raise ModelError(
            f"mvpa_attention (triton): head dim must be a power of two in [16, 256], got {head_dim}"
        )
    if n_channels > MAX_CHANNELS:
        raise ModelError(
            f"mvpa_attention (triton): at most {MAX_CHANNELS} channels per segment, got {n_channels}; "
            "use backend='reference'"
        )
    c_pad = triton.next_power_of_2(n_channels)
    if device.type != "cuda":
        return 16, max(1, 16 // c_pad), c_pad, 4, 1
    if dtype == torch.float32:
        return 32, max(1, 32 // c_pad), c_pad, 4, 1
    segs = max(1, 64 // c_pad)
    num_warps = 8 if segs * c_pad * head_dim >= 128 * 64 else 4
    return 64, segs, c_pad, num_warps, 2


def _dot_precision(dtype):
    """IEEE fp32 dots for fp32 inputs (not TF32); the default for half types."""
    return "ieee" if dtype == torch.float32 else None


def mvpa_forward(q, k, v, bias_time, bias_chan, n_channels, window, scale, q_offset=0):
    """Launch the forward kernel; returns ``(out, lse)`` (``lse`` in log2 units, fp32).

    ``q``/bias tables hold the queries ``q_offset .. N-1`` (all of them when
    ``q_offset == 0``, one last segment for the streaming path); ``k``/``v``
    hold all ``N`` keys. Inputs are assumed validated
    (:func:`kernels.reference.check_mvpa_inputs`).
    """
    B, H, Nq, D = q.shape
    Hkv, N = k.shape[1], k.shape[2]
    C = n_channels
    T = N // C
    block_m, segs, c_pad, num_warps, num_stages = _config(C, D, q.device, q.dtype)
    q, bias_time, bias_chan = q.contiguous(), bias_time.contiguous(), bias_chan.contiguous()
    k, v = (x if x.stride(-1) == 1 and x.stride(-2) == D else x.contiguous() for x in (k, v))
    out = torch.empty_like(q)
    lse = torch.empty((B, H, Nq), device=q.device, dtype=torch.float32)
    grid = (triton.cdiv(Nq, block_m), B * H)
    _mvpa_fwd_kernel[grid](
        q, k, v, bias_time, bias_chan, out, lse,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        scale * LOG2E, Nq, N, T, C, window, q_offset, H, H // Hkv,
        BLOCK_M=block_m, SEGS=segs, C_PAD=c_pad, BLOCK_D=D, DOT_PREC=_dot_precision(q.dtype),
        num_warps=num_warps, num_stages=num_stages,
    )
    return out, lse


def mvpa_backward(do, q, k, v, bias_time, bias_chan, out, lse, n_channels, window, scale):
    """Launch the two backward kernels; returns ``(dq, dk, dv, d_bias_time, d_bias_chan)``."""
    B, H, N, D = q.shape
    Hkv = k.shape[1]
    C = n_channels
    T = N // C
    block_m, segs, c_pad, num_warps, num_stages = _config(C, D, q.device, q.dtype)
    do = do.contiguous()
    delta = (do.float() * out.float()).sum(-1)
    dq = torch.empty_like(q)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    dbt = torch.zeros((B, H, N, T), device=q.device, dtype=torch.float32)
    dbc_key = torch.empty((B, H, N, C), device=q.device, dtype=torch.float32)
    common = dict(BLOCK_M=block_m, SEGS=segs, C_PAD=c_pad, BLOCK_D=D, DOT_PREC=_dot_precision(q.dtype),
                  num_warps=num_warps, num_stages=num_stages)
    _mvpa_bwd_dq_kernel[(triton.cdiv(N, block_m), B * H)](
        q, k, v, bias_time, bias_chan, do, lse, delta, dq, dbt, dbc_key,
        scale * LOG2E, scale, N, T, C, window, H, H // Hkv, **common,
    )
    _mvpa_bwd_dkdv_kernel[(triton.cdiv(T, segs), B * Hkv)](
        q, k, v, bias_time, bias_chan, do, lse, delta, dk, dv,
        scale * LOG2E, scale, N, T, C, window, H, H // Hkv, **common,
    )
    return dq, dk, dv, dbt.to(bias_time.dtype), _fold_channel_grad(dbc_key, C).to(bias_chan.dtype)


def _fold_channel_grad(dbc_key, n_channels):
    """Per-key-channel sums ``(.., N, C)`` -> per-distance gradient of ``bias_chan``.

    ``d bias_chan[n, d] = S[n, c - d] + S[n, c + d]`` (the second only for
    ``d > 0``), out-of-range channels contributing nothing.
    """
    C = n_channels
    N = dbc_key.shape[-2]
    c_q = torch.arange(N, device=dbc_key.device)[:, None] % C
    dist = torch.arange(C, device=dbc_key.device)[None, :]
    left, right = c_q - dist, c_q + dist
    shape = dbc_key.shape
    grad = dbc_key.gather(-1, left.clamp(min=0).expand(shape)) * (left >= 0)
    return grad + dbc_key.gather(-1, right.clamp(max=C - 1).expand(shape)) * ((right < C) & (dist > 0))


class MVPAttentionFunction(torch.autograd.Function):
    """Autograd wrapper of the fused kernels (gradients of q, k, v and both bias tables)."""

    @staticmethod
    def forward(ctx, q, k, v, bias_time, bias_chan, n_channels, window, scale):
        out, lse = mvpa_forward(q, k, v, bias_time, bias_chan, n_channels, window, scale)
        ctx.save_for_backward(q, k, v, bias_time, bias_chan, out, lse)
        ctx.params = (n_channels, window, scale)
        return out

    @staticmethod
    def backward(ctx, do):
        q, k, v, bias_time, bias_chan, out, lse = ctx.saved_tensors
        grads = mvpa_backward(do, q.contiguous(), k.contiguous(), v.contiguous(), bias_time.contiguous(),
                              bias_chan.contiguous(), out, lse, *ctx.params)
        return (*grads, None, None, None)


def mvpa_attention_triton(q, k, v, bias_time, bias_chan, *, n_channels, window=10, scale=None):
    """Fused MVPA (same contract and result as :func:`kernels.reference.mvpa_attention_reference`)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return MVPAttentionFunction.apply(q, k, v, bias_time, bias_chan, n_channels, window, scale)


def _patch_interpreter_for_numpy_2_4():
    """Let Triton's CPU interpreter use tensor loop bounds under numpy >= 2.4.

    Triton 3.6's interpreter turns scalars (stored as 1-element arrays) into
    Python ints with ``int(array)``, which numpy 2.4 refuses, so ``range(lo, hi)``
    with bounds computed from ``tl.program_id`` fails (triton-lang/triton#9171,
    fixed upstream by #9172). Applied only in interpreter mode and only when
    the bug is present; compiled GPU kernels are not affected.
    """
    import numpy as np
    from triton.runtime import interpreter

    try:
        int(np.zeros(1, dtype=np.int32))
        return
    except TypeError:
        pass
    original = interpreter._patch_lang_tensor
    if getattr(original, "numpy_2_4_fixed", False):
        return

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patch_lang_tensor.numpy_2_4_fixed = True
    interpreter._patch_lang_tensor = patch_lang_tensor


def interpreter_active() -> bool:
    """Whether these kernels were defined in interpreter mode (they then accept CPU tensors)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(_mvpa_fwd_kernel, InterpretedFunction)


if interpreter_active():
    _patch_interpreter_for_numpy_2_4()
