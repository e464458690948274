"""Multi-variate parallel attention (MVPA): the pure-PyTorch definition.

This module is the *definition* of MVPA used everywhere else in :mod:`kernels`:
the Triton kernel (:mod:`kernels.triton_mvpa`) and the streaming path
(:mod:`kernels.streaming`) are tested against it, and it runs whenever no
CUDA device is available.

Token layout
    ``N = T * C`` tokens over a (time segment, channel) grid, flattened
    time-major: token ``n = t * C + c``.

Score between query ``(t, c)`` and key ``(t', c')``::

    s = scale * (w * q.k + bias_time[..., t - t'] + bias_chan[..., |c - c'|])
    w = 1 if (t - t' <= window) or (t == T - 1) else 0
    s = -inf if t' > t  (causal in time; all channels of a segment see each other)

followed by a softmax over the keys and ``out = softmax(s) @ v``. The bias
tables hold, for every query, its score for each time distance ``0..T-1`` and
each channel distance ``0..C-1``; the callers fold the Transformer-XL style
``u/v/z`` biases and the positional codebooks into them (Carzaniga et al.,
"A foundation model with multi-variate parallel attention to generate
neuronal activity", eqs. 2-4; braindecode's ``_MVPAttention``).

Implementation notes
    Grouped-query attention is computed without repeating keys/values: the query
    heads are viewed as ``(Hkv, G)`` and contracted against the ``Hkv`` key heads.
    The relative terms are expanded per key *time* ``(N, T)`` and per key
    *channel* ``(N, C)`` and broadcast onto the ``(N, T, C)`` view of the score
    matrix, so no ``N x N`` index tensor is built. The ``N x N`` scores themselves
    are materialised (memory quadratic in ``N``): this path is for correctness
    and CPU use; :mod:`kernels.triton_mvpa` is the fused kernel. Half-precision
    inputs are computed in float32, float64 inputs in float64, and the output is
    returned in the input dtype. Autograd gives the gradients of all five
    tensor inputs.
"""

from __future__ import annotations

import math

import torch

from bci.errors import ModelError


def check_mvpa_inputs(q, k, v, bias_time, bias_chan, n_channels, window):
    """Validate the MVPA input contract and return ``(B, H, Hkv, N, D, T, C)``.

    Raises
    ------
    bci.errors.ModelError
        When a shape, dtype or device does not follow the contract of
        :func:`mvpa_attention_reference`; the message names what was expected
        and what was found.
    """
    tensors = {"q": q, "k": k, "v": v, "bias_time": bias_time, "bias_chan": bias_chan}
    for name, x in tensors.items():
        if not isinstance(x, torch.Tensor):
            raise ModelError(f"mvpa_attention: {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4:
            raise ModelError(
                f"mvpa_attention: {name} must have 4 dimensions, got shape {tuple(x.shape)}"
            )
    devices = {x.device for x in tensors.values()}
    if len(devices) != 1:
        raise ModelError(f"mvpa_attention: all inputs must be on one device, got {sorted(map(str, devices))}")
    if not q.is_floating_point():
        raise ModelError(f"mvpa_attention: q must be floating point, got {q.dtype}")
    for name in ("k", "v"):
        if tensors[name].dtype != q.dtype:
            raise ModelError(f"mvpa_attention: {name} dtype {tensors[name].dtype} differs from q dtype {q.dtype}")
    if not isinstance(n_channels, int) or n_channels < 1:
        raise ModelError(f"mvpa_attention: n_channels must be a positive int, got {n_channels!r}")
    if not isinstance(window, int) or window < 0:
        raise ModelError(f"mvpa_attention: window must be a non-negative int, got {window!r}")
    B, H, N, D = q.shape
    if k.shape != v.shape:
        raise ModelError(f"mvpa_attention: k shape {tuple(k.shape)} differs from v shape {tuple(v.shape)}")
    Bk, Hkv, Nk, Dk = k.shape
    if (Bk, Nk, Dk) != (B, N, D):
        raise ModelError(
            f"mvpa_attention: k/v must be (B={B}, Hkv, N={N}, D={D}) to match q, got {tuple(k.shape)}"
        )
    if Hkv < 1 or H % Hkv:
        raise ModelError(f"mvpa_attention: query heads ({H}) must be a multiple of key/value heads ({Hkv})")
    C = n_channels
    if N % C:
        raise ModelError(
            f"mvpa_attention: the token count N={N} must be a multiple of n_channels={C} (time-major T*C grid)"
        )
    T = N // C
    if tuple(bias_time.shape) != (B, H, N, T):
        raise ModelError(
            f"mvpa_attention: bias_time must be (B, H, N, T)={(B, H, N, T)}, got {tuple(bias_time.shape)}"
        )
    if tuple(bias_chan.shape) != (B, H, N, C):
        raise ModelError(
            f"mvpa_attention: bias_chan must be (B, H, N, C)={(B, H, N, C)}, got {tuple(bias_chan.shape)}"
        )
    return B, H, Hkv, N, D, T, C


def relative_indices(n_channels, n_segments, window, device, q_offset=0):
    """Time and channel distances and masks of every (query, key time/channel) pair.

    Parameters
    ----------
    n_channels, n_segments : int
        ``C`` and ``T`` of the token grid.
    window : int
        Content window in segments.
    device : torch.device
        Where the index tensors are built.
    q_offset : int
        Token index of the first query; the queries run from it to the last
        token (``(T - 1) * C`` gives the last segment only).

    Returns
    -------
    dt : LongTensor (n_queries, T)
        ``t - t'`` clamped at 0 (index into ``bias_time``).
    causal : BoolTensor (n_queries, T)
        ``t' <= t``.
    content : BoolTensor (n_queries, T)
        ``w`` of the definition: inside the window or a last-segment query.
    dc : LongTensor (n_queries, C)
        ``|c - c'|`` (index into ``bias_chan``).
    """
    C, T = n_channels, n_segments
    tokens = torch.arange(q_offset, T * C, device=device)
    t_q, c_q = tokens // C, tokens % C
    dt = t_q[:, None] - torch.arange(T, device=device)[None, :]
    causal = dt >= 0
    content = (dt <= window) | (t_q[:, None] == T - 1)
    dc = (c_q[:, None] - torch.arange(C, device=device)[None, :]).abs()
    return dt.clamp(min=0), causal, content, dc


def mvpa_scores_and_values(q, k, v, bias_time, bias_chan, *, n_channels, window, scale, q_offset=0):
    """Softmax weights-times-values of MVPA for the queries ``q_offset..N-1``.

    Shared by :func:`mvpa_attention_reference` (``q_offset=0``) and the
    streaming path (``q_offset=(T-1)*C``). ``q`` and the bias tables hold only
    those queries; ``k``/``v`` hold all ``N`` keys. Returns the output in the
    compute dtype (float64 for float64 inputs, else float32).
    """
    B, H, Nq, D = q.shape
    Hkv, N = k.shape[1], k.shape[2]
    G = H // Hkv
    C = n_channels
    T = N // C
    cdtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    dt, causal, content, dc = relative_indices(C, T, window, q.device, q_offset)
    # grouped-query attention: view query heads as (Hkv, G), never repeat k/v
    qg = q.to(cdtype).reshape(B, Hkv, G, Nq, D)
    qk = torch.einsum("bkgnd,bkmd->bkgnm", qg, k.to(cdtype)).reshape(B, H, Nq, T, C)
    time_term = bias_time.to(cdtype).gather(-1, dt.expand(B, H, Nq, T))
    chan_term = bias_chan.to(cdtype).gather(-1, dc.expand(B, H, Nq, C))
    s = qk * content[..., None] + time_term[..., None] + chan_term[..., None, :]
    s = (s * scale).masked_fill(~causal[..., None], float("-inf"))
    p = torch.softmax(s.reshape(B, H, Nq, N), dim=-1)
    out = torch.einsum("bkgnm,bkmd->bkgnd", p.reshape(B, Hkv, G, Nq, N), v.to(cdtype))
    return out.reshape(B, H, Nq, D)


def mvpa_attention_reference(q, k, v, bias_time, bias_chan, *, n_channels, window=10, scale=None):
    """MVPA in plain PyTorch (the definition; see the module docstring).

    Parameters
    ----------
    q : Tensor (B, H, N, D)
        Queries, ``N = T * C`` tokens flattened time-major (token ``t * C + c``).
    k, v : Tensor (B, Hkv, N, D)
        Keys and values; ``H`` must be a multiple of ``Hkv`` (grouped queries).
    bias_time : Tensor (B, H, N, T)
        Each query's score for every time distance ``d = t - t'``.
    bias_chan : Tensor (B, H, N, C)
        Each query's score for every channel distance ``d = |c - c'|``.
    n_channels : int
        ``C``; ``N`` must be a multiple of it.
    window : int
        The content term ``q.k`` counts only for ``t - t' <= window`` (and for
        every key when the query is in the last segment).
    scale : float or None
        Multiplies the whole score; ``1 / sqrt(D)`` by default.

    Returns
    -------
    out : Tensor (B, H, N, D), dtype of ``q``.
    """
    D = check_mvpa_inputs(q, k, v, bias_time, bias_chan, n_channels, window)[4]
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    out = mvpa_scores_and_values(
        q, k, v, bias_time, bias_chan, n_channels=n_channels, window=window, scale=scale
    )
    return out.to(q.dtype)
