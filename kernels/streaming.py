"""Streaming MVPA: append one time segment, attend to cached keys/values.

Live decoding produces one new time segment (``C`` tokens) at a time. The new
tokens are the *last* segment of the context, so by the MVPA definition
(:mod:`kernels.reference`) their content term is never windowed: they attend
with ``w = 1`` to every cached key, and causality only hides nothing (all
cached keys are in the past or in the same segment). Their output is therefore
exactly the last ``C`` rows of a full recompute over the cached segments plus
the new one; :func:`mvpa_attention_last_segment` computes only those rows, in
``O(C * N)`` instead of ``O(N^2)``: the reference math on CPU (autograd works),
the fused forward kernel with a query offset on the GPU (inference only, no
autograd).

:class:`MVPAKVCache` holds the keys/values of the last ``max_segments``
segments of one attention layer (the model's context length; the oldest
segment is dropped when it is full). It writes into a buffer of twice that
capacity and compacts only when the end is reached, so appending is amortised
``O(C * D)`` per segment and the cached keys are handed to the kernel as a
strided view, never copied.

The last-segment subtlety (model level)
    The result above is exact *for one attention call given the same cached
    K/V*. In a multi-layer model the K/V of layers >= 2 at an earlier segment
    ``t`` come from hidden states computed when ``t`` was itself the last
    segment (full content term over its past), whereas a full recompute over a
    longer context treats ``t`` as an inner segment (content only within
    ``window`` segments). The two agree while ``t <= window`` (nothing lies
    beyond the window yet) and drift apart after that; they also drift when
    the callers' bias tables depend on the context length (braindecode indexes
    its codebooks by ``T - 1 - d``). Layer 1 (K/V from token embeddings) is
    always exact. The model decides between recomputing the window exactly
    and using this cache as an approximation, and documents the error it
    accepts; this module only guarantees the per-layer identity.
"""

from __future__ import annotations

import math

import torch

from bci.errors import ModelError
from kernels.dispatch import load_triton, select_backend
from kernels.reference import mvpa_scores_and_values


def _check_last_segment_inputs(q, k, v, bias_time, bias_chan, n_channels):
    names = {"q": q, "k": k, "v": v, "bias_time": bias_time, "bias_chan": bias_chan}
    for name, x in names.items():
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            found = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ModelError(f"mvpa_attention_last_segment: {name} must be a 4-d tensor, got {found}")
    B, H, C, D = q.shape
    if C != n_channels:
        raise ModelError(
            f"mvpa_attention_last_segment: q must hold one segment of n_channels={n_channels} tokens, "
            f"got {C}"
        )
    if k.shape != v.shape or k.shape[0] != B or k.shape[3] != D or H % k.shape[1]:
        raise ModelError(
            f"mvpa_attention_last_segment: k and v must be (B={B}, Hkv, N, D={D}) with Hkv dividing "
            f"H={H}, got {tuple(k.shape)} and {tuple(v.shape)}"
        )
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ModelError(f"mvpa_attention_last_segment: k/v dtype {k.dtype}/{v.dtype} differs from q {q.dtype}")
    N = k.shape[2]
    if N == 0 or N % C:
        raise ModelError(
            f"mvpa_attention_last_segment: the cached token count N={N} must be a positive multiple "
            f"of n_channels={C}"
        )
    T = N // C
    if tuple(bias_time.shape) != (B, H, C, T) or tuple(bias_chan.shape) != (B, H, C, C):
        raise ModelError(
            "mvpa_attention_last_segment: bias tables must be (B, H, C, T)="
            f"{(B, H, C, T)} and (B, H, C, C)={(B, H, C, C)}, got {tuple(bias_time.shape)} and "
            f"{tuple(bias_chan.shape)}"
        )
    return T, D


def mvpa_attention_last_segment(q, k, v, bias_time, bias_chan, *, n_channels, scale=None, backend="auto"):
    """MVPA output of the last segment's queries against all keys.

    Parameters
    ----------
    q : Tensor (B, H, C, D)
        Queries of the newest segment (``C = n_channels`` tokens).
    k, v : Tensor (B, Hkv, N, D)
        Keys/values of all ``T = N / C`` segments, the newest last, time-major.
    bias_time : Tensor (B, H, C, T)
        The new queries' score for every time distance ``0..T-1``.
    bias_chan : Tensor (B, H, C, C)
        The new queries' score for every channel distance.
    n_channels : int
    scale : float or None
        Defaults to ``1 / sqrt(D)``.
    backend : {"auto", "reference", "triton"}
        As in :func:`kernels.mvpa_attention`.

    Returns
    -------
    out : Tensor (B, H, C, D), equal to the last ``C`` rows of
        ``mvpa_attention`` over the ``N`` tokens (for any ``window``).
    """
    T, D = _check_last_segment_inputs(q, k, v, bias_time, bias_chan, n_channels)
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    q_offset = (T - 1) * n_channels
    if select_backend(q.device, backend) == "reference":
        out = mvpa_scores_and_values(q, k, v, bias_time, bias_chan, n_channels=n_channels,
                                     window=T, scale=scale, q_offset=q_offset)
        return out.to(q.dtype)
    with torch.no_grad():
        out, _ = load_triton(q.device).mvpa_forward(q, k, v, bias_time, bias_chan, n_channels,
                                                    T, scale, q_offset=q_offset)
    return out


class MVPAKVCache:
    """Key/value cache of one MVPA layer for segment-by-segment decoding.

    Parameters
    ----------
    n_channels : int
        Tokens per segment (``C``).
    max_segments : int
        Context length in segments; older segments are dropped.

    Examples
    --------
    >>> cache = MVPAKVCache(n_channels=C, max_segments=25)          # doctest: +SKIP
    >>> T = cache.append(k_new, v_new)        # (B, Hkv, C, D) each    # doctest: +SKIP
    >>> out = cache.attend(q_new, bias_time, bias_chan)  # tables sized for T  # doctest: +SKIP
    """

    def __init__(self, n_channels, max_segments):
        self.n_channels = n_channels
        self.max_segments = max_segments
        self.reset()

    def reset(self):
        """Forget every cached segment."""
        self._k = self._v = None
        self._start = self._end = 0  # segment positions inside the buffer

    @property
    def n_segments(self) -> int:
        """Number of segments currently cached."""
        return self._end - self._start

    def keys_values(self):
        """Cached ``(k, v)``, each ``(B, Hkv, n_segments * C, D)`` (views of the buffer)."""
        if self._k is None:
            raise ModelError("MVPAKVCache: nothing cached yet; call append() first")
        C = self.n_channels
        span = slice(self._start * C, self._end * C)
        return self._k[:, :, span], self._v[:, :, span]

    def append(self, k_new, v_new) -> int:
        """Add one segment's keys and values ``(B, Hkv, C, D)``; returns the cached segment count.

        The returned count ``T`` is the size the new queries' ``bias_time`` must
        have in :meth:`attend`.
        """
        C, cap = self.n_channels, self.max_segments
        if not isinstance(C, int) or C < 1 or not isinstance(cap, int) or cap < 1:
            raise ModelError(
                f"MVPAKVCache: n_channels and max_segments must be positive ints, got {C!r} and {cap!r}"
            )
        if k_new.ndim != 4 or k_new.shape != v_new.shape or k_new.shape[2] != C:
            raise ModelError(
                f"MVPAKVCache.append: k_new and v_new must both be (B, Hkv, C={C}, D), got "
                f"{tuple(k_new.shape)} and {tuple(v_new.shape)}"
            )
        if self._k is not None and (
            self._k.shape[:2] != k_new.shape[:2] or self._k.shape[3] != k_new.shape[3]
            or self._k.dtype != k_new.dtype or self._k.device != k_new.device
        ):
            raise ModelError(
                f"MVPAKVCache.append: segment {tuple(k_new.shape)} {k_new.dtype} on {k_new.device} does "
                f"not match the cache {tuple(self._k.shape)} {self._k.dtype} on {self._k.device}; reset() first"
            )
        if self._k is None:
            B, Hkv, _, D = k_new.shape
            shape = (B, Hkv, 2 * cap * C, D)
            self._k = torch.empty(shape, dtype=k_new.dtype, device=k_new.device)
            self._v = torch.empty(shape, dtype=v_new.dtype, device=v_new.device)
        if self._end == 2 * cap:  # compact: move the newest cap - 1 segments to the front
            keep = slice((self._end - cap + 1) * C, self._end * C)
            self._k[:, :, : (cap - 1) * C] = self._k[:, :, keep]
            self._v[:, :, : (cap - 1) * C] = self._v[:, :, keep]
            self._start, self._end = 0, cap - 1
        self._k[:, :, self._end * C : (self._end + 1) * C] = k_new
        self._v[:, :, self._end * C : (self._end + 1) * C] = v_new
        self._end += 1
        self._start = max(self._start, self._end - cap)
        return self.n_segments

    def attend(self, q_new, bias_time, bias_chan, *, scale=None, backend="auto"):
        """Output of the newest segment's queries ``(B, H, C, D)`` over the cache.

        ``bias_time`` is ``(B, H, C, n_segments)``, ``bias_chan`` ``(B, H, C, C)``;
        see :func:`mvpa_attention_last_segment`.
        """
        k, v = self.keys_values()
        return mvpa_attention_last_segment(q_new, k, v, bias_time, bias_chan, n_channels=self.n_channels,
                                           scale=scale, backend=backend)
