"""Backend choice for MVPA attention: the one place that looks at the device.

``"auto"`` picks the fused Triton kernel for CUDA tensors on a GPU of compute
capability >= 8.0 (Ampere and newer: bf16 tensor cores) with Triton
installed, and the PyTorch reference otherwise. ``"reference"`` and
``"triton"`` force either; forcing Triton on CPU tensors is only possible under
the Triton interpreter (``TRITON_INTERPRET=1`` set before ``triton`` is first
imported), which is how the kernels are tested without a GPU. Triton is
imported lazily, only when it is chosen, so importing :mod:`kernels` never
imports it.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from bci.errors import ModelError
from kernels.reference import check_mvpa_inputs, mvpa_attention_reference

BACKENDS = ("auto", "reference", "triton")


def select_backend(device: torch.device | str, backend: str = "auto") -> str:
    """Resolve ``backend`` for tensors on ``device``; returns ``"triton"`` or ``"reference"``.

    Raises
    ------
    bci.errors.ModelError
        For an unknown backend name, or ``"triton"`` where it cannot run (no
        Triton installed; CPU tensors without ``TRITON_INTERPRET=1``).
    """
    if backend not in BACKENDS:
        raise ModelError(f"mvpa_attention: backend must be one of {BACKENDS}, got {backend!r}")
    device = torch.device(device)
    if backend == "reference":
        return "reference"
    has_triton = importlib.util.find_spec("triton") is not None
    if backend == "auto":
        if device.type == "cuda" and has_triton and torch.cuda.get_device_capability(device) >= (8, 0):
            return "triton"
        return "reference"
    if not has_triton:
        raise ModelError("mvpa_attention: backend='triton' needs the triton package, which is not installed")
    if device.type == "cuda":
        return "triton"
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") == "1":
        return "triton"
    raise ModelError(
        f"mvpa_attention: backend='triton' needs CUDA tensors, got {device.type} tensors; on CPU it "
        "runs only under the Triton interpreter (set TRITON_INTERPRET=1 before triton is imported), "
        "otherwise use backend='reference' or 'auto'"
    )


def load_triton(device: torch.device | str):
    """Import :mod:`kernels.triton_mvpa` (and so ``triton``) on first use.

    Triton decides at kernel definition (the first import of that module) whether
    its kernels are compiled or interpreted. For CPU tensors the kernels must
    have been defined in interpreter mode; a ModelError says so otherwise (the
    variable was set after the first import).
    """
    from kernels import triton_mvpa

    if torch.device(device).type != "cuda" and not triton_mvpa.interpreter_active():
        raise ModelError(
            "mvpa_attention: the Triton kernels were compiled for a GPU because TRITON_INTERPRET=1 was "
            "set after kernels.triton_mvpa was first imported; set it before (e.g. in the process "
            "environment) to run them on CPU tensors"
        )
    return triton_mvpa


def mvpa_attention(q, k, v, bias_time, bias_chan, *, n_channels, window=10, scale=None, backend="auto"):
    """Multi-variate parallel attention (MVPA) over a time-major ``T x C`` token grid.

    For query ``(t, c)`` and key ``(t', c')`` (token ``n = t * C + c``)::

        s = scale * (w * q.k + bias_time[.., t - t'] + bias_chan[.., |c - c'|])

    with ``w = 1`` if ``t - t' <= window`` or ``t`` is the last segment, else 0;
    keys with ``t' > t`` are masked; ``out = softmax(s) @ v``.

    Parameters
    ----------
    q : Tensor (B, H, N, D)
    k, v : Tensor (B, Hkv, N, D)
        ``H`` a multiple of ``Hkv`` (grouped-query attention).
    bias_time : Tensor (B, H, N, T)
        Each query's score for every time distance (``N = T * C``).
    bias_chan : Tensor (B, H, N, C)
        Each query's score for every channel distance.
    n_channels : int
        ``C``.
    window : int
        Content window in segments (MVPFormer: 10).
    scale : float or None
        Defaults to ``1 / sqrt(D)``.
    backend : {"auto", "reference", "triton"}
        See :func:`select_backend`.

    Returns
    -------
    out : Tensor (B, H, N, D), dtype of ``q``; differentiable in all five tensors.

    Notes
    -----
    braindecode's ``_MVPAttention`` is reproduced exactly by passing ``q + u``
    as ``q``, ``bias_time[.., d] = (q + v) . Kt[T-1-d]`` and
    ``bias_chan[.., d] = (q + z) . Kc[C-1-d]`` (``Kt``/``Kc`` its
    ``position_net``/``channel_net`` keys; ``u, v, z`` the slices of
    ``attn_bias``), then its ``c_proj`` of the merged heads.
    """
    check_mvpa_inputs(q, k, v, bias_time, bias_chan, n_channels, window)
    if select_backend(q.device, backend) == "reference":
        return mvpa_attention_reference(q, k, v, bias_time, bias_chan, n_channels=n_channels,
                                        window=window, scale=scale)
    return load_triton(q.device).mvpa_attention_triton(
        q, k, v, bias_time, bias_chan, n_channels=n_channels, window=window, scale=scale
    )
