"""MVPFormer: a heterogeneous-channel iEEG/EEG foundation model with MVPA attention.

The signal of every channel is cut into segments; each segment becomes one token
through a fixed db4 wavelet decomposition, an RMSNorm and a linear projection. The
tokens form a ``(segment, channel)`` grid, flattened time-major (token ``t * C + c``),
and go through a Llama-style decoder whose attention is *multi-variate parallel
attention* (MVPA): content, time-relative and channel-relative terms, causal in time,
bidirectional across the channels of one segment. Because nothing depends on the
absolute channel count, one set of weights runs on recordings with any number of
channels (up to the channel codebook).

The attention itself is computed by :func:`kernels.mvpa_attention` (reference
PyTorch on CPU, fused Triton on CUDA); this module only builds its inputs (the
projections and the per-query relative bias tables) and the rest of the network.
The parameter names are those of :class:`braindecode.models.MVPFormer`, so its
state dict (and the public weights braindecode converts) loads directly, see
:meth:`MVPFormer.from_braindecode`.

Reference: Carzaniga, Hersche, Sebastian, Schindler & Rahimi, "A foundation model
with multi-variate parallel attention to generate neuronal activity", ICLR 2026
(arXiv:2506.20354).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from braindecode.functional import daubechies_filters, dwt_max_level, wavelet_decomposition
from braindecode.models.base import EEGModuleMixin
from torch import nn

import kernels
from bci.errors import ModelError

#: Architecture presets. ``tiny`` is for CPU tests; ``S`` and ``M`` are the
#: published MVPFormer-S (about 74M parameters) and MVPFormer-M (about 1.2B).
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(d_model=64, n_layers=2, n_heads=4, n_head_kv=2, d_inner=128),
    "S": dict(d_model=768, n_layers=12, n_heads=12, n_head_kv=4, d_inner=1728),
    "M": dict(d_model=2048, n_layers=24, n_heads=16, n_head_kv=8, d_inner=5632),
}

#: How a relative distance ``d`` selects a row of the positional codebooks.
CODEBOOK_INDEXING = ("distance", "reference")

#: How the seizure head treats the channels of one input (see :class:`MVPFormer`).
CHANNEL_MODES = ("joint", "independent")

#: What the tokenizer keeps of each token's amplitude (see :class:`WaveletEmbedding`).
AMPLITUDE = ("none", "bands")


def combine_channel_probabilities(proba: torch.Tensor, combine="mean") -> torch.Tensor:
    """Combine per-channel class probabilities ``(B, C, K) -> (B, K)``.

    ``"mean"`` averages the probability vectors; ``"max"`` and ``"top<k>"`` (or an
    int ``k``) act on the last ("seizure") class of a binary head: its probability is
    the maximum, or the mean of the ``k`` largest (``k`` capped at ``C``), over the
    channels, and the other class gets the complement. Same rule as
    :func:`pipelines.seizure.combine_channels`.
    """
    if combine == "mean":
        return proba.mean(dim=1)
    k = combine
    if isinstance(k, str) and k.startswith("top") and k[3:].isdigit():
        k = int(k[3:])
    if combine != "max" and not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
        raise ModelError(f"channel_combine: expected 'mean', 'max', 'top<k>' or an int k >= 1, found {combine!r}")
    if proba.shape[-1] != 2:
        raise ModelError(f"channel_combine={combine!r} needs a binary head, found {proba.shape[-1]} outputs")
    pos = proba[..., -1]
    if combine == "max":
        p = pos.max(dim=1).values
    else:
        p = pos.topk(min(k, pos.shape[1]), dim=1).values.mean(dim=1)
    return torch.stack([1 - p, p], dim=-1)


def segment_samples(sfreq: float, segment_seconds: float) -> int:
    """Number of samples of one segment, checking that it is a whole number.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz (after any resampling, which happens outside the model).
    segment_seconds : float
        Segment duration in seconds (the reference uses 5 s at 512 Hz = 2560).

    Returns
    -------
    int
        ``sfreq * segment_seconds``.

    Raises
    ------
    ModelError
        If ``sfreq * segment_seconds`` is not a positive whole number of samples.
    """
    n = float(sfreq) * float(segment_seconds)
    if n < 1 or not math.isclose(n, round(n), rel_tol=0, abs_tol=1e-6):
        raise ModelError(
            f"a segment of {segment_seconds} s at {sfreq} Hz is {n:g} samples; "
            "MVPFormer needs a whole, positive number of samples per segment "
            "(resample the recording or change segment_seconds)"
        )
    return int(round(n))


def codebook_rows(n: int, indexing: str, device=None) -> torch.Tensor:
    """Codebook row used for each distance ``d = 0 .. n-1``.

    ``"reference"`` reproduces the reference implementation (and braindecode):
    distance ``d`` among ``n`` segments (or channels) reads row ``n - 1 - d``, so the
    row for a given distance depends on the current input size. ``"distance"`` reads
    row ``d`` whatever the input size, which makes the model translation-invariant in
    time (a prefix gives the same outputs whatever follows; streaming can reuse its
    cache) and gives a distance the same meaning for every channel count.
    """
    d = torch.arange(n, device=device)
    if indexing == "reference":
        return n - 1 - d
    return d


def wavelet_band_sizes(n_samples: int, filter_len: int = 8) -> list[int]:
    """Lengths of the bands ``[cA_n, cD_n, ..., cD_1]`` that ``wavelet_decomposition``
    (full depth, periodic, db4: ``filter_len`` 8) gives for ``n_samples`` samples."""
    pad = (2 * filter_len - 3) // 2
    sizes = []
    for _ in range(dwt_max_level(n_samples, filter_len)):
        n_samples = (n_samples + 2 * pad + n_samples % 2 - filter_len) // 2 + 1
        sizes.append(n_samples)
    return [sizes[-1], *reversed(sizes)] if sizes else [n_samples]  # too short to decompose: one band


class WaveletEmbedding(nn.Module):
    """Segment tokenizer: fixed db4 wavelet decomposition -> RMSNorm -> Linear.

    Input ``(..., segment_len)`` raw samples, output ``(..., d_model)``. The full-depth
    periodic db4 decomposition (``[cA_n, cD_n, ..., cD_1]``, as ``pywt.wavedec(...,
    mode="periodic")``) has no parameters; only the norm and the projection learn.
    Same computation and parameter names as braindecode's ``_WaveletPatchEmbed``
    (which computes the decomposition in float32 whatever the model's dtype).

    The RMSNorm divides every token by its amplitude, so the token alone no longer says
    how large the signal was. ``amplitude="bands"`` gives it back: the log RMS of each
    wavelet band before the norm, ``0.5 * log(mean(band**2) + eps)`` with the norm's
    ``eps`` (about the log of what the norm divides out, band by band: log band power),
    goes through ``amp_proj`` (Linear(n_bands -> d_model)) and is added to the token.
    The values depend on the input's unit: train and apply the model at one fixed scale
    (``DeepClassifier``'s one global factor, or ``bci pretrain``'s ``normalize: global``),
    never per-segment z-scoring. ``"none"`` (default) is the reference tokenizer, with
    the same parameters as braindecode's.
    """

    def __init__(self, segment_len: int, d_model: int, amplitude: str = "none"):
        super().__init__()
        if amplitude not in AMPLITUDE:
            raise ModelError(f"amplitude must be one of {AMPLITUDE}, got {amplitude!r}")
        self.register_buffer("_filters", daubechies_filters(4), persistent=False)
        self.dwt_size = wavelet_decomposition(
            torch.zeros(1, segment_len), self._filters
        ).shape[-1]
        self.ln = nn.RMSNorm(self.dwt_size, eps=1e-5)
        self.proj = nn.Linear(self.dwt_size, d_model, bias=False)
        self.amplitude = amplitude
        if amplitude == "bands":
            sizes = wavelet_band_sizes(segment_len, self._filters.shape[-1])
            # (dwt_size, n_bands): column b averages the coefficients of band b
            band = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
            mean = nn.functional.one_hot(band, len(sizes)).float() / torch.tensor(sizes, dtype=torch.float32)
            self.register_buffer("_band_mean", mean, persistent=False)
            self.amp_proj = nn.Linear(len(sizes), d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # decomposition in at least float32 (float64 for a float64 model)
        dtype = torch.promote_types(self.ln.weight.dtype, torch.float32)
        coefs = wavelet_decomposition(x.to(dtype), self._filters)
        tokens = self.proj(self.ln(coefs).to(self.proj.weight.dtype))
        if self.amplitude == "none":
            return tokens
        log_rms = 0.5 * torch.log(coefs.square() @ self._band_mean.to(dtype) + self.ln.eps)
        return tokens + self.amp_proj(log_rms.to(self.amp_proj.weight.dtype))


class MVPAttention(nn.Module):
    """Grouped-query MVPA attention layer around :func:`kernels.mvpa_attention`.

    Projections (braindecode names): ``q_attn`` (queries), ``c_attn`` (content keys |
    values), ``position_net`` / ``channel_net`` (keys of the time / channel distance
    codebooks, W_kR / W_kC), ``attn_bias`` (the u | v | z biases, one ``kv_dim``
    slice each, shared by the query heads of a KV group), ``c_proj`` (output).

    For a query ``q`` of head h the kernel receives ``q + u`` for the content term
    and the per-distance tables ``bias_time[d] = (q + v) . Kt[row_t(d)]`` and
    ``bias_chan[d] = (q + z) . Kc[row_c(d)]``, rows chosen by
    :func:`codebook_rows`. Attention-weight dropout is not applied (the kernels
    have none); ``resid_drop`` applies to the output.
    """

    def __init__(self, d_model, n_heads, n_head_kv, local_window=10, resid_drop=0.0):
        super().__init__()
        if d_model % n_heads or n_heads % n_head_kv:
            raise ModelError(
                f"d_model ({d_model}) must be a multiple of n_heads ({n_heads}) and "
                f"n_heads a multiple of n_head_kv ({n_head_kv})"
            )
        self.n_heads = n_heads
        self.n_head_kv = n_head_kv
        self.head_dim = d_model // n_heads
        self.kv_dim = self.head_dim * n_head_kv
        self.local_window = local_window
        self.q_attn = nn.Linear(d_model, d_model, bias=False)
        self.c_attn = nn.Linear(d_model, 2 * self.kv_dim, bias=False)
        self.position_net = nn.Linear(d_model, self.kv_dim, bias=False)
        self.channel_net = nn.Linear(d_model, self.kv_dim, bias=False)
        self.c_proj = nn.Linear(d_model, d_model, bias=False)
        self.attn_bias = nn.Parameter(torch.empty(3 * self.kv_dim))
        nn.init.normal_(self.attn_bias, std=0.02)
        self.resid_dropout = nn.Dropout(resid_drop)

    def _heads(self, x, n):  # (B, N, n*hd) -> (B, n, N, hd)
        return x.unflatten(-1, (n, self.head_dim)).transpose(1, 2)

    def _per_query_head(self, x):  # (..., Hkv, hd) -> (..., H, hd), GQA order
        return x.repeat_interleave(self.n_heads // self.n_head_kv, dim=-2)

    def project(self, x, time_codes, chan_codes):
        """Queries, keys, values and relative bias tables for tokens ``x``.

        ``x`` (B, N, D) normalised hidden states; ``time_codes`` (T, D) and
        ``chan_codes`` (C, D) the codebook rows for distances 0..T-1 / 0..C-1.
        Returns ``q + u`` (B, H, N, hd), ``k``, ``v`` (B, Hkv, N, hd),
        ``bias_time`` (B, H, N, T) and ``bias_chan`` (B, H, N, C).
        """
        q = self._heads(self.q_attn(x), self.n_heads)
        k, v = self.c_attn(x).split(self.kv_dim, dim=-1)
        k, v = self._heads(k, self.n_head_kv), self._heads(v, self.n_head_kv)
        u, vb, z = (
            self._per_query_head(b.view(self.n_head_kv, self.head_dim))[None, :, None]
            for b in self.attn_bias.split(self.kv_dim)
        )
        kt = self._per_query_head(
            self.position_net(time_codes).unflatten(-1, (self.n_head_kv, -1))
        )  # (T, H, hd)
        kc = self._per_query_head(
            self.channel_net(chan_codes).unflatten(-1, (self.n_head_kv, -1))
        )  # (C, H, hd)
        bias_time = torch.einsum("bhnd,thd->bhnt", q + vb, kt)
        bias_chan = torch.einsum("bhnd,chd->bhnc", q + z, kc)
        return q + u, k, v, bias_time, bias_chan

    def merge(self, out):  # (B, H, N, hd) -> (B, N, D)
        return self.resid_dropout(self.c_proj(out.transpose(1, 2).flatten(2)))

    def forward(self, x, time_codes, chan_codes, n_channels, backend="auto"):
        q, k, v, bias_time, bias_chan = self.project(x, time_codes, chan_codes)
        out = kernels.mvpa_attention(
            q, k, v, bias_time, bias_chan,
            n_channels=n_channels, window=self.local_window, backend=backend,
        )
        return self.merge(out)


class SwiGLU(nn.Module):
    """Llama feed-forward ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, d_model: int, d_inner: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_inner, bias=False)
        self.up_proj = nn.Linear(d_model, d_inner, bias=False)
        self.down_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class MVPABlock(nn.Module):
    """Parallel decoder block ``x + attn(RMSNorm(x)) + SwiGLU(RMSNorm(x))``."""

    def __init__(self, d_model, n_heads, n_head_kv, d_inner, local_window, drop):
        super().__init__()
        self.ln_1 = nn.RMSNorm(d_model, eps=1e-5)
        self.attn = MVPAttention(d_model, n_heads, n_head_kv, local_window, drop)
        self.mlp = SwiGLU(d_model, d_inner)

    def forward(self, x, time_codes, chan_codes, n_channels, backend="auto"):
        h = self.ln_1(x)
        return x + self.mlp(h) + self.attn(h, time_codes, chan_codes, n_channels, backend)


@dataclass
class StreamState:
    """State of one stream of :meth:`MVPFormer.step`: a KV cache per layer.

    ``caches[l]`` is layer ``l``'s :class:`kernels.MVPAKVCache` holding the keys and
    values of the last ``context`` segments, each computed when its segment was the
    newest one. ``n_seen`` counts all segments pushed so far.
    """

    n_channels: int
    context: int
    caches: list = field(default_factory=list)
    n_seen: int = 0

    @property
    def n_cached(self) -> int:
        """Number of segments (the newest included) currently in the cache."""
        return self.caches[0].n_segments if self.caches else 0


class MVPFormer(EEGModuleMixin, nn.Module):
    r"""MVPFormer (Carzaniga et al., 2026) with MVPA attention from :mod:`kernels`.

    Input contract
        ``x`` of shape ``(batch, n_channels, n_samples)``, already resampled to the
        rate the model was trained at, with ``n_samples`` a whole multiple of
        ``segment_len`` (``T = n_samples / segment_len`` segments, at most
        ``max_segments``) and ``n_channels`` at most ``max_channels``. Any channel
        count works with the same weights; ``n_chans`` is only informative.

    Architecture
        1. Tokens: every (segment, channel) -> db4 wavelet decomposition -> RMSNorm ->
           Linear(dwt_size -> d_model) (:class:`WaveletEmbedding`; with
           ``amplitude="bands"`` plus a projection of the bands' log RMS); grid
           flattened time-major, token ``t * C + c``; dropout.
        2. ``n_layers`` parallel blocks ``x + attn(RMSNorm(x)) + SwiGLU(RMSNorm(x))``
           with grouped-query MVPA (:class:`MVPAttention`): content term windowed to
           ``local_window`` past segments except for the queries of the last segment,
           time-relative term from a learned codebook of ``max_segments`` distances,
           channel-relative term from one of ``max_channels`` channel distances,
           causal in time, all channels of a segment see each other.
        3. Final RMSNorm ``ln_f``.
        4. Heads: the seizure head ``final_layer`` takes the last segment, averages
           over channels and maps ``d_model -> n_outputs`` (:meth:`forward`); the
           pretraining head ``pretrain_head`` maps the output at ``(t, c)`` to a
           prediction of the token embedding at ``(t + 1, c)``
           (:meth:`forward_pretrain`, trained with :mod:`models.pretrain`).

    Channels at the seizure head
        ``channel_mode="joint"`` (default, the paper's): all channels form one token
        grid, attend to each other, and the head averages the channels' last-segment
        states. ``"independent"``: every channel is encoded alone (a batch of
        single-channel inputs), each gets class probabilities, and they are combined
        with ``channel_combine`` (:func:`combine_channel_probabilities`); the output
        is then the *log* of the combined probabilities (so ``softmax`` of it gives
        them back and cross-entropy training is unchanged). With one channel both
        modes give the same probabilities. ``"independent"`` runs a head trained on
        one channel (Bonn segments) on any montage without using channel distances
        it never saw.

    Codebook indexing
        The reference indexes the time codebook by ``T - 1 - d`` and the channel
        codebook by ``C - 1 - |c - c'|`` (the row of a distance moves with the input
        size). ``codebook_indexing="reference"`` keeps that, for checkpoints trained
        that way (:meth:`from_braindecode` sets it). The default ``"distance"`` reads
        row ``d``: the output of a prefix does not depend on what follows (so
        :meth:`step` reuses cached keys exactly) and a channel distance means the same
        for 1 or 128 channels. Both share the parameter layout.

    Parameters
    ----------
    n_outputs, n_chans, chs_info, n_times, input_window_seconds, sfreq
        braindecode signal parameters (``n_outputs`` defaults to 2: seizure or not).
    size : {"tiny", "S", "M"}
        Preset for ``d_model, n_layers, n_heads, n_head_kv, d_inner``; an explicit
        value of any of those overrides it.
    segment_len : int
        Samples per segment (reference: 2560 = 5 s at 512 Hz; see
        :func:`segment_samples`).
    local_window : int
        Content-attention window in segments (reference 10).
    max_segments, max_channels : int
        Sizes of the time (110) and channel (128) distance codebooks: the limits on
        ``T`` and ``C``.
    drop_prob : float
        Dropout on token embeddings and on the attention/MLP outputs.
    codebook_indexing : {"distance", "reference"}
        See above.
    channel_mode : {"joint", "independent"}
        See "Channels at the seizure head".
    channel_combine : "mean" | "max" | "top<k>" | int
        Combination of the channels in ``"independent"`` mode.
    amplitude : {"none", "bands"}
        ``"bands"`` adds each token's log amplitude per wavelet band (measured before the
        tokenizer's RMSNorm, which removes it) to its embedding, through a learned
        ``patch_embed.amp_proj``: the model sees how large the signal is (seizures are
        mostly a power phenomenon), at the input scale it is trained at. ``"none"``: the
        reference tokenizer (the parameters of braindecode's MVPFormer and of the
        published checkpoints).
    backend : {"auto", "reference", "triton"}
        Passed to :func:`kernels.mvpa_attention`.

    References
    ----------
    Carzaniga, F. S., Hersche, M., Sebastian, A., Schindler, K., & Rahimi, A.
    (2026). A foundation model with multi-variate parallel attention to generate
    neuronal activity. ICLR. arXiv:2506.20354.
    """

    def __init__(
        self,
        n_outputs=2,
        n_chans=None,
        chs_info=None,
        n_times=None,
        input_window_seconds=None,
        sfreq=None,
        *,
        size="tiny",
        segment_len=2560,
        d_model=None,
        n_layers=None,
        n_heads=None,
        n_head_kv=None,
        d_inner=None,
        local_window=10,
        max_segments=110,
        max_channels=128,
        drop_prob=0.1,
        codebook_indexing="distance",
        backend="auto",
        channel_mode="joint",
        channel_combine="mean",
        amplitude="none",
    ):
        super().__init__(
            n_outputs=n_outputs, n_chans=n_chans, chs_info=chs_info,
            n_times=n_times, input_window_seconds=input_window_seconds, sfreq=sfreq,
        )
        if size not in PRESETS:
            raise ModelError(f"size must be one of {sorted(PRESETS)}, got {size!r}")
        if codebook_indexing not in CODEBOOK_INDEXING:
            raise ModelError(
                f"codebook_indexing must be one of {CODEBOOK_INDEXING}, "
                f"got {codebook_indexing!r}"
            )
        if channel_mode not in CHANNEL_MODES:
            raise ModelError(f"channel_mode must be one of {CHANNEL_MODES}, got {channel_mode!r}")
        if channel_mode == "independent":
            combine_channel_probabilities(torch.full((1, 1, n_outputs), 1.0 / n_outputs), channel_combine)
        if not isinstance(segment_len, int) or segment_len < 8:
            raise ModelError(
                f"segment_len must be an integer number of samples >= 8 (the db4 "
                f"filter length), got {segment_len!r}"
            )
        arch = dict(PRESETS[size])
        for name, value in dict(
            d_model=d_model, n_layers=n_layers, n_heads=n_heads,
            n_head_kv=n_head_kv, d_inner=d_inner,
        ).items():
            if value is not None:
                arch[name] = value
        self.size = size
        self.segment_len = segment_len
        self.d_model = arch["d_model"]
        self.n_layers = arch["n_layers"]
        self.n_heads = arch["n_heads"]
        self.n_head_kv = arch["n_head_kv"]
        self.d_inner = arch["d_inner"]
        self.local_window = local_window
        self.max_segments = max_segments
        self.max_channels = max_channels
        self.drop_prob = drop_prob
        self.codebook_indexing = codebook_indexing
        self.backend = backend
        self.channel_mode = channel_mode
        self.channel_combine = channel_combine
        self.amplitude = amplitude
        if n_chans is not None:
            self._check_channels(n_chans)
        if self._n_times is not None:
            self._check_samples(self._n_times)

        self.patch_embed = WaveletEmbedding(segment_len, self.d_model, amplitude)
        self.positional_embedding = nn.Embedding(max_segments, self.d_model)
        self.channel_embedding = nn.Embedding(max_channels, self.d_model)
        self.drop = nn.Dropout(drop_prob)
        self.blocks = nn.ModuleList(
            MVPABlock(
                self.d_model, self.n_heads, self.n_head_kv, self.d_inner,
                local_window, drop_prob,
            )
            for _ in range(self.n_layers)
        )
        self.ln_f = nn.RMSNorm(self.d_model, eps=1e-5)
        self.final_layer = nn.Linear(self.d_model, self.n_outputs, bias=False)
        self.pretrain_head = nn.Linear(self.d_model, self.d_model, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ------------------------------------------------------------------ checks
    def _check_channels(self, n_channels):
        if n_channels < 1 or n_channels > self.max_channels:
            raise ModelError(
                f"MVPFormer takes 1 to max_channels={self.max_channels} channels "
                f"(the size of its channel codebook), got {n_channels}"
            )

    def _check_samples(self, n_samples):
        if n_samples < self.segment_len:
            raise ModelError(
                f"the input has {n_samples} samples, shorter than one segment "
                f"(segment_len={self.segment_len} samples)"
            )
        if n_samples % self.segment_len:
            raise ModelError(
                f"the input has {n_samples} samples, not a whole number of segments "
                f"of segment_len={self.segment_len} samples "
                f"({n_samples / self.segment_len:.3f}); crop it to a multiple"
            )
        n_segments = n_samples // self.segment_len
        if n_segments > self.max_segments:
            raise ModelError(
                f"the input has {n_segments} segments, more than "
                f"max_segments={self.max_segments} (the size of the time codebook)"
            )
        return n_segments

    def _check_input(self, x):
        if not isinstance(x, torch.Tensor) or x.ndim != 3:
            raise ModelError(
                "MVPFormer expects a tensor (batch, n_channels, n_samples), got "
                f"{type(x).__name__} of shape {tuple(getattr(x, 'shape', ()))}"
            )
        self._check_channels(x.shape[1])
        return self._check_samples(x.shape[2])

    # ----------------------------------------------------------------- network
    def _codes(self, n_segments, n_channels, device):
        time = self.positional_embedding(
            codebook_rows(n_segments, self.codebook_indexing, device)
        )
        chan = self.channel_embedding(
            codebook_rows(n_channels, self.codebook_indexing, device)
        )
        return time, chan

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``(batch, T, C, d_model)`` of ``x (batch, C, T*segment_len)``."""
        n_segments = self._check_input(x)
        segments = x.unflatten(-1, (n_segments, self.segment_len)).transpose(1, 2)
        return self.patch_embed(segments)

    def encode(self, x: torch.Tensor, return_embeddings: bool = False):
        """Final hidden states ``(batch, T, C, d_model)`` (after ``ln_f``).

        With ``return_embeddings`` also returns the token embeddings (the targets of
        next-segment pretraining).
        """
        embeds = self.embed(x)
        batch, n_segments, n_channels, _ = embeds.shape
        time_codes, chan_codes = self._codes(n_segments, n_channels, x.device)
        hidden = self.drop(embeds).flatten(1, 2)
        for block in self.blocks:
            hidden = block(hidden, time_codes, chan_codes, n_channels, self.backend)
        hidden = self.ln_f(hidden).unflatten(1, (n_segments, n_channels))
        return (hidden, embeds) if return_embeddings else hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Seizure-head logits ``(batch, n_outputs)``: last segment, channel mean.

        In ``channel_mode="independent"``: log of the channel-combined probabilities.
        """
        if self.channel_mode == "independent":
            return self.channel_log_proba(x)
        return self.final_layer(self.encode(x)[:, -1].mean(dim=1))

    def _independent_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Head logits of every channel encoded alone, ``(batch, C, n_outputs)``."""
        self._check_input(x)
        batch, n_channels, n_samples = x.shape
        hidden = self.encode(x.reshape(batch * n_channels, 1, n_samples))[:, -1, 0]
        return self.final_layer(hidden).view(batch, n_channels, -1)

    def channel_log_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Log of the channel-combined class probabilities, each channel encoded alone."""
        logp = self._independent_logits(x).log_softmax(-1)
        if logp.shape[1] == 1:
            return logp[:, 0]
        return combine_channel_probabilities(logp.exp(), self.channel_combine).clamp_min(1e-12).log()

    def forward_pretrain(self, x: torch.Tensor):
        """Next-segment predictions and targets for contrastive pretraining.

        Returns ``(pred, target)``, both ``(batch, T - 1, C, d_model)``:
        ``pred[:, t, c] = pretrain_head(h[:, t, c])`` and ``target[:, t, c]`` the
        token embedding of segment ``t + 1``, channel ``c``.
        """
        hidden, embeds = self.encode(x, return_embeddings=True)
        if hidden.shape[1] < 2:
            raise ModelError(
                "next-segment pretraining needs windows of at least 2 segments "
                f"({2 * self.segment_len} samples), got {hidden.shape[1]}"
            )
        return self.pretrain_head(hidden[:, :-1]), embeds[:, 1:]

    def channel_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel contributions to the seizure-head logits, ``(batch, C, n_outputs)``.

        The head is linear in the channel mean of the last segment's hidden states
        ``h_c``, so ``logits = sum_c final_layer(h_c) / C`` exactly: entry ``[b, c]``
        is channel ``c``'s additive share ``final_layer(h_c) / C`` and the sum over
        channels equals :meth:`forward`. It says which channels' last-segment states
        push the decision (e.g. ``[..., 1] - [..., 0]`` towards "seizure"); each
        ``h_c`` still depends on all channels through attention, so it is an
        attribution of the readout, not a causal ablation.

        In ``channel_mode="independent"`` the entry ``[b, c]`` is channel ``c``'s own
        class probabilities (each channel encoded alone), the input of the
        combination.
        """
        if self.channel_mode == "independent":
            return self._independent_logits(x).softmax(-1)
        hidden = self.encode(x)[:, -1]
        return self.final_layer(hidden) / hidden.shape[1]

    # --------------------------------------------------------------- streaming
    def init_stream(self, n_channels: int, context: int | None = None) -> StreamState:
        """Empty key/value cache for :meth:`step` on ``n_channels`` channels.

        ``context`` bounds the segments attended to (cached + new), default and
        at most ``max_segments``; older segments leave the cache.
        """
        self._check_channels(n_channels)
        context = self.max_segments if context is None else context
        if not 1 <= context <= self.max_segments:
            raise ModelError(
                f"context must be 1 to max_segments={self.max_segments} segments, "
                f"got {context}"
            )
        caches = [kernels.MVPAKVCache(n_channels, context) for _ in self.blocks]
        return StreamState(n_channels=n_channels, context=context, caches=caches)

    @torch.no_grad()
    def step(self, state: StreamState, segment: torch.Tensor) -> torch.Tensor:
        """Push one new segment ``(batch, C, segment_len)``; return its hidden states.

        Returns the final hidden states of the new segment ``(batch, C, d_model)``
        (apply :meth:`head` for logits). The new segment's tokens attend to the cached
        keys/values of up to ``context - 1`` previous segments, through the kernels'
        streaming path, and their own keys/values are appended to the cache.

        Exactness: the new segment is the *last* one, so its queries see the full
        content term, exactly as in a full recompute over the same cached window. The
        cached keys/values of an earlier segment were computed when *it* was the
        last one (full content term), whereas a full recompute gives earlier
        segments only the ``local_window`` content term, and in layers >= 2 their
        keys/values then differ. The result is therefore exact for the first layer
        and while at most ``local_window + 2`` segments are attended to, and an
        approximation otherwise (measured in the issue notes); with
        ``codebook_indexing="reference"`` the codebook rows also move as the window
        grows.
        """
        if segment.ndim != 3 or segment.shape[-1] != self.segment_len:
            raise ModelError(
                "step expects one segment (batch, n_channels, segment_len="
                f"{self.segment_len}), got shape {tuple(segment.shape)}"
            )
        if segment.shape[1] != state.n_channels:
            raise ModelError(
                f"the stream was opened for {state.n_channels} channels, got a "
                f"segment with {segment.shape[1]}"
            )
        return _stream_step(self, state, segment)

    def head(self, hidden_last: torch.Tensor) -> torch.Tensor:
        """Seizure logits from the last segment's hidden states ``(batch, C, d_model)``."""
        return self.final_layer(hidden_last.mean(dim=1))

    # ------------------------------------------------------------- conversion
    @classmethod
    def from_braindecode(cls, module) -> "MVPFormer":
        """An :class:`MVPFormer` carrying the weights of a braindecode ``MVPFormer``.

        The architecture is read from ``module``; the codebooks are indexed the
        reference way (``codebook_indexing="reference"``), so in eval mode both give
        the same logits for inputs of whole segments (braindecode zero-pads a partial
        last segment; this model refuses it). The pretraining head, absent from
        braindecode, keeps its fresh initialisation.

        Raises
        ------
        ModelError
            If ``module`` uses options this model does not implement (concat pooling,
            no global content term, per-layer logit scaling, another activation).
        """
        blk = module.blocks[0]
        attn = blk.attn
        if (
            module.pooling != "mean"
            or not attn.global_att
            or attn.scale_by_layer_idx
            or not attn.scale_attn
            or not isinstance(blk.mlp.act, nn.SiLU)
        ):
            raise ModelError(
                "from_braindecode supports braindecode MVPFormer with pooling='mean', "
                "global_att=True, scale_attn=True, scale_by_layer_idx=False and SiLU"
            )
        model = cls(
            n_outputs=module.n_outputs,
            n_chans=module.n_chans,
            n_times=None,
            sfreq=module._sfreq,
            segment_len=int(module.segment_len),
            d_model=module.d_model,
            n_layers=len(module.blocks),
            n_heads=attn.n_heads,
            n_head_kv=attn.n_head_kv,
            d_inner=blk.mlp.gate_proj.out_features,
            local_window=attn.local_window,
            max_segments=module.positional_embedding.num_embeddings,
            max_channels=module.channel_embedding.num_embeddings,
            drop_prob=module.drop.p,
            codebook_indexing="reference",
        )
        state = {k: v for k, v in module.state_dict().items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) != {"pretrain_head.weight"}:
            raise ModelError(
                "braindecode MVPFormer state does not match: missing "
                f"{sorted(missing)}, unexpected {sorted(unexpected)}"
            )
        weight = next(module.parameters())
        return model.to(device=weight.device, dtype=weight.dtype)


def _step_layers(model: MVPFormer, segment: torch.Tensor, n_segments: int, attend) -> torch.Tensor:
    """The newest segment's final hidden states ``(B, C, d_model)``: its tokens through every
    block, ``attend(layer, q, k, v, bias_time, bias_chan)`` giving each layer's attention output
    over ``n_segments`` segments (the cached ones and the new one's ``k``, ``v``)."""
    time_codes, chan_codes = model._codes(n_segments, segment.shape[1], segment.device)
    hidden = model.patch_embed(segment)  # (B, C, D): C tokens of one segment
    for i, block in enumerate(model.blocks):
        normed = block.ln_1(hidden)
        q, k, v, bias_time, bias_chan = block.attn.project(normed, time_codes, chan_codes)
        hidden = hidden + block.mlp(normed) + block.attn.merge(attend(i, q, k, v, bias_time, bias_chan))
    return model.ln_f(hidden)


def _stream_step(model: MVPFormer, state: StreamState, segment: torch.Tensor):
    def attend(i, q, k, v, bias_time, bias_chan):
        cache = state.caches[i]
        cache.append(k, v)
        return cache.attend(q, bias_time, bias_chan, backend=model.backend)

    hidden = _step_layers(model, segment, min(state.n_cached + 1, state.context), attend)
    state.n_seen += 1
    return hidden


class FullContextStep(nn.Module):
    """:meth:`MVPFormer.step` + :meth:`MVPFormer.head` once a stream's cache is full, as a pure
    function of the cached keys and values (the graph an ONNX export takes).

    ``forward(segment, past_k, past_v)``: ``segment`` ``(B, C, segment_len)``, ``past_k`` and
    ``past_v`` ``(n_layers, B, n_head_kv, (context - 1) * C, head_dim)`` (every layer's cache,
    oldest segment first, as :meth:`past` stacks it). Returns the logits ``(B, n_outputs)`` and
    the new segment's keys and values ``(n_layers, B, n_head_kv, C, head_dim)``: the caller
    drops the oldest segment and appends them. Same arithmetic as :meth:`MVPFormer.step`
    (reference attention backend).
    """

    def __init__(self, model: MVPFormer):
        super().__init__()
        self.model = model

    @staticmethod
    def past(state: StreamState) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached keys and values of ``state``, stacked over layers (copies)."""
        kv = [cache.keys_values() for cache in state.caches]
        return torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])

    def forward(self, segment, past_k, past_v):
        n_channels = segment.shape[1]
        new_k, new_v = [], []

        def attend(i, q, k, v, bias_time, bias_chan):
            new_k.append(k)
            new_v.append(v)
            keys, values = torch.cat([past_k[i], k], dim=2), torch.cat([past_v[i], v], dim=2)
            return kernels.mvpa_attention_last_segment(q, keys, values, bias_time, bias_chan,
                                                       n_channels=n_channels, backend="reference")

        hidden = _step_layers(self.model, segment, past_k.shape[3] // n_channels + 1, attend)
        return self.model.head(hidden), torch.stack(new_k), torch.stack(new_v)
