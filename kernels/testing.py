"""Checks of MVPA implementations against the float64 reference (as ``torch.testing``).

Shared by ``tests/test_kernels.py`` and ``benchmarks/device_check.py``: fresh
random inputs, the relative error of an implementation's forward and of its
five input gradients against :func:`kernels.reference.mvpa_attention_reference`
computed in float64, and the streaming KV cache against a full recompute.
"""

from __future__ import annotations

import math

import torch

from kernels.dispatch import mvpa_attention
from kernels.streaming import MVPAKVCache

GRAD_NAMES = ("out", "dq", "dk", "dv", "d_bias_time", "d_bias_chan")


def random_inputs(B, T, C, H, Hkv, D, dtype=torch.float64, device="cpu", seed=None, requires_grad=False):
    """Fresh random q, k, v, bias_time, bias_chan (a new seed each call unless given)."""
    gen = torch.Generator().manual_seed(seed if seed is not None else torch.seed() % 2**31)
    N = T * C
    shapes = [(B, H, N, D), (B, Hkv, N, D), (B, Hkv, N, D), (B, H, N, T), (B, H, N, C)]
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
            .requires_grad_(requires_grad) for s in shapes]


def relative_error(got, want):
    """||got - want|| / ||want||, with a floor for (mathematically) zero gradients."""
    got, want = got.detach().double(), want.detach().double()
    floor = 1e-3 * math.sqrt(want.numel())
    return float((got - want).norm() / max(float(want.norm()), floor))


def errors_vs_float64(attentions, shape, dtype, device, grads=True):
    """Relative errors of MVPA implementations against the float64 reference, on fresh inputs.

    Parameters
    ----------
    attentions : dict
        ``name -> fn(q, k, v, bias_time, bias_chan, *, n_channels, window) -> out``.
    shape : tuple
        ``(B, T, C, H, Hkv, D, window)``.
    dtype, device
        Where the implementations run; all see the same inputs and output gradient.
        The reference gets those inputs upcast to float64, so their rounding to
        ``dtype`` is not counted as error.
    grads : bool
        Also compare the gradients of all five inputs (else the output only).

    Returns
    -------
    dict
        ``name -> {"out": err, "dq": err, ...}`` (keys :data:`GRAD_NAMES`, or ``"out"``
        alone without ``grads``), each :func:`relative_error`.
    """
    B, T, C, H, Hkv, D, window = shape
    inputs = random_inputs(B, T, C, H, Hkv, D, dtype=dtype, device=device, requires_grad=grads)
    grad_out = torch.randn(B, H, T * C, D, device=device, dtype=dtype)

    def run(fn, args):
        out = fn(*args, n_channels=C, window=window)
        if out.dtype != args[0].dtype:
            raise AssertionError(f"output dtype {out.dtype}, inputs {args[0].dtype}")
        if not grads:
            return (out,)
        return (out, *torch.autograd.grad(out, args, grad_out.to(out.dtype)))

    ref_inputs = [x.detach().double().requires_grad_(grads) for x in inputs]
    want = run(lambda *x, **kw: mvpa_attention(*x, **kw, backend="reference"), ref_inputs)
    return {name: {key: relative_error(g, w) for key, g, w in zip(GRAD_NAMES, run(fn, inputs), want)}
            for name, fn in attentions.items()}


def streaming_vs_full(B, C, H, Hkv, D, window, max_segments, n_steps, dtype, device, backend):
    """Largest |streaming - full recompute| over ``n_steps`` appended segments (fresh inputs).

    The streaming side is :class:`kernels.MVPAKVCache` with ``backend``; the full
    recompute is the reference over the cached segments, of which only the last
    segment's rows are compared.
    """
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)

    def randn(*shape):
        return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)

    cache = MVPAKVCache(n_channels=C, max_segments=max_segments)
    ks, vs, worst = [], [], 0.0
    for step in range(n_steps):
        k_new, v_new = randn(B, Hkv, C, D), randn(B, Hkv, C, D)
        ks.append(k_new), vs.append(v_new)
        T = cache.append(k_new, v_new)
        if T != min(step + 1, max_segments):
            raise AssertionError(f"cache holds {T} segments after {step + 1} appends (max {max_segments})")
        q_new, bt_new, bc_new = randn(B, H, C, D), randn(B, H, C, T), randn(B, H, C, C)
        got = cache.attend(q_new, bt_new, bc_new, backend=backend)
        k_all, v_all = torch.cat(ks[-T:], dim=2), torch.cat(vs[-T:], dim=2)
        q_all = torch.cat([randn(B, H, (T - 1) * C, D), q_new], dim=2)
        bt_all = torch.cat([randn(B, H, (T - 1) * C, T), bt_new], dim=2)
        bc_all = torch.cat([randn(B, H, (T - 1) * C, C), bc_new], dim=2)
        full = mvpa_attention(q_all, k_all, v_all, bt_all, bc_all, n_channels=C, window=window,
                              backend="reference")
        worst = max(worst, float((got.double() - full[:, :, -C:].double()).abs().max()))
    return worst
