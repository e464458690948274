"""DBConformer: dual-branch convolutional transformer for EEG decoding.

A braindecode-style re-implementation of the model of Wang et al. (2025). The
public reference code runs only as GPU scripts on pre-saved arrays; this module
is a plain :class:`torch.nn.Module` following braindecode's
:class:`~braindecode.models.base.EEGModuleMixin` contract, so it trains through
``braindecode.EEGClassifier`` (skorch) and runs offline and live alike.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from braindecode.models.base import EEGModuleMixin
from torch import Tensor, nn

from bci.errors import ModelError

__all__ = ["DBConformer"]

_ATTENTION_SCALES = ("embedding", "head")


class _MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention on ``(B, N, D)`` tokens via fused SDPA kernels.

    ``scale`` multiplies the query-key products before the softmax; the
    reference DBConformer (like EEG Conformer) uses ``1 / sqrt(D)`` with ``D``
    the embedding size, not ``1 / sqrt(D / n_heads)``.
    """

    def __init__(self, emb_size: int, num_heads: int, att_drop_prob: float, scale: float):
        super().__init__()
        self.num_heads = num_heads
        self.att_drop_prob = att_drop_prob
        self.scale = scale
        self.qkv = nn.Linear(emb_size, 3 * emb_size)
        self.projection = nn.Linear(emb_size, emb_size)

    def forward(self, x: Tensor) -> Tensor:
        batch, n_tokens, emb = x.shape
        qkv = self.qkv(x).reshape(batch, n_tokens, 3, self.num_heads, emb // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            dropout_p=self.att_drop_prob if self.training else 0.0,
            scale=self.scale,
        )
        return self.projection(out.transpose(1, 2).reshape(batch, n_tokens, emb))


class _EncoderBlock(nn.Module):
    """Pre-LayerNorm transformer block: x + MHSA(LN(x)); x + FFN(LN(x))."""

    def __init__(
        self,
        emb_size: int,
        num_heads: int,
        ffn_expansion: int,
        drop_prob: float,
        att_drop_prob: float,
        scale: float,
    ):
        super().__init__()
        self.norm_attention = nn.LayerNorm(emb_size)
        self.attention = _MultiHeadSelfAttention(emb_size, num_heads, att_drop_prob, scale)
        self.drop_attention = nn.Dropout(drop_prob)
        self.norm_ffn = nn.LayerNorm(emb_size)
        self.ffn = nn.Sequential(
            nn.Linear(emb_size, ffn_expansion * emb_size),
            nn.GELU(),
            nn.Dropout(drop_prob),
            nn.Linear(ffn_expansion * emb_size, emb_size),
        )
        self.drop_ffn = nn.Dropout(drop_prob)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_attention(self.attention(self.norm_attention(x)))
        return x + self.drop_ffn(self.ffn(self.norm_ffn(x)))


class _TemporalPatchEmbedding(nn.Sequential):
    """(B, C, T) -> (B, P, D): 1x1 spatial conv + BN, depthwise temporal conv + BN,
    GELU, non-overlapping average pooling into ``P = T // patch_size`` patches."""

    def __init__(self, n_chans, emb_size, kernel_size, patch_size, drop_prob):
        super().__init__(
            nn.Conv1d(n_chans, emb_size, 1, bias=False),
            nn.BatchNorm1d(emb_size),
            nn.Conv1d(emb_size, emb_size, kernel_size, padding="same", groups=emb_size, bias=False),
            nn.BatchNorm1d(emb_size),
            nn.GELU(),
            nn.AvgPool1d(patch_size, patch_size),
            nn.Dropout(drop_prob),
        )
        for module in self:
            if isinstance(module, nn.Conv1d):  # the reference's initialisation
                nn.init.trunc_normal_(module.weight, std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x).transpose(1, 2)


class _ChannelTokenEmbedding(nn.Module):
    """(B, C, T) -> (B, C, D): the same small temporal CNN applied to every channel
    (Conv1d 1->F, ELU, global average pooling, Linear F->D), one token per channel."""

    def __init__(self, emb_size, n_filters, kernel_size, stride):
        super().__init__()
        self.conv = nn.Conv1d(1, n_filters, kernel_size, stride=stride, padding=kernel_size // 2)
        self.activation = nn.ELU()
        self.linear = nn.Linear(n_filters, emb_size)

    def forward(self, x: Tensor) -> Tensor:
        batch, n_chans, n_times = x.shape
        features = self.activation(self.conv(x.reshape(batch * n_chans, 1, n_times)))
        return self.linear(features.mean(dim=-1)).reshape(batch, n_chans, -1)


class DBConformer(EEGModuleMixin, nn.Module):
    r"""DBConformer, the dual-branch convolutional transformer of Wang et al. (2025).

    Input contract: a float tensor ``(batch, n_chans, n_times)`` with the
    ``n_chans`` and ``n_times`` given at construction, sampled at ``sfreq``;
    output: logits ``(batch, n_outputs)``. Amplitudes should be of order one
    (e.g. microvolts scaled, or standardised): the spatial branch has no
    normalisation layer (:class:`pipelines.deep.DeepClassifier` does this).

    Architecture (defaults are those of the reference implementation):

    - **Temporal branch (T-Conformer).** 1x1 convolution ``C -> D`` (spatial
      mixing) + BatchNorm, depthwise temporal convolution ``D -> D`` of
      ``temporal_kernel_size`` (63, same padding) + BatchNorm, GELU; average
      pooling with non-overlapping patches of ``round(patch_seconds * sfreq)``
      samples (125 at 250 Hz), dropout -> ``P = n_times // patch_size`` tokens
      of size ``D = emb_size`` (40); learnable positional embedding;
      ``temporal_depth`` transformer blocks; mean over tokens -> ``x_t``.
    - **Spatial branch (S-Conformer).** Each channel separately through
      ``Conv1d(1 -> 16, k=25, stride 5, pad 12)``, ELU, global average pooling,
      ``Linear(16 -> D)`` (weights shared across channels) -> one token per
      channel; learnable positional embedding; ``spatial_depth`` transformer blocks.
    - **Transformer blocks.** Pre-LayerNorm, ``num_heads`` (10) heads on ``D``,
      feed-forward ``D -> 4D -> D`` with GELU, dropout ``drop_prob`` (0.5) on
      attention weights, residual branches and inside the feed-forward.
      Attention uses :func:`torch.nn.functional.scaled_dot_product_attention`.
    - **Channel attention.** Additive attention pooling over the spatial tokens
      (``Linear(D, D)``, tanh, ``Linear(D, 1)``, softmax over channels) -> ``x_s``;
      see :meth:`channel_weights`.
    - **Head.** ``concat(x_t, x_s)`` (2D) -> 64, ELU, dropout 0.5 -> 32, ELU,
      dropout 0.3 -> ``n_outputs`` (``final_layer``).

    With 22 channels, 1001 samples at 250 Hz and 2 classes the model has
    93,747 parameters (8 temporal patches).

    Parameters
    ----------
    emb_size : int
        Token size ``D`` of both branches.
    num_heads : int
        Attention heads; must divide ``emb_size``.
    temporal_depth, spatial_depth : int
        Transformer blocks in the temporal and spatial branch (2 and 2 in the
        paper's within-subject settings; 6 and 6 for its cross-subject settings).
    temporal_kernel_size : int
        Length (samples) of the depthwise temporal convolution.
    patch_seconds : float
        Patch length in seconds; ``patch_size = round(patch_seconds * sfreq)``,
        capped at ``n_times`` (so a window shorter than one patch gives one token).
    spatial_n_filters, spatial_kernel_size, spatial_stride : int
        The per-channel convolution of the spatial branch.
    ffn_expansion : int
        Hidden size of the feed-forward block as a multiple of ``emb_size``.
    drop_prob : float
        Dropout after the patch embedding, in residual branches and feed-forward.
    att_drop_prob : float
        Dropout on the attention weights.
    head_drop_probs : tuple of float
        Dropout after the 64- and the 32-unit layers of the head.
    attention_scale : {"embedding", "head"}
        ``"embedding"`` scales query-key products by ``1 / sqrt(emb_size)`` as the
        reference does; ``"head"`` by the usual ``1 / sqrt(emb_size / num_heads)``.
    pos_init_std : float
        Standard deviation of the normal initialisation of the positional
        embeddings (1.0 in the reference; 0.02 is the common ViT choice).

    Notes
    -----
    The reference trims the last time sample before pooling, which for its
    1001-sample windows gives the same 8 patches as the floor-mode pooling used
    here; for windows that are a multiple of the patch size it would leave one
    patch fewer than its positional embedding, so it is not reproduced.

    References
    ----------
    .. [Wang2025] Wang, Z., Wang, H., Jia, T., He, X., Li, S., Wu, D. (2025).
       DBConformer: Dual-Branch Convolutional Transformer for EEG Decoding.
       arXiv:2506.21140. Reference code: https://github.com/wzwvv/DBConformer
    """

    def __init__(
        self,
        n_chans=None,
        n_outputs=None,
        n_times=None,
        sfreq=250.0,
        chs_info=None,
        input_window_seconds=None,
        emb_size: int = 40,
        num_heads: int = 10,
        temporal_depth: int = 2,
        spatial_depth: int = 2,
        temporal_kernel_size: int = 63,
        patch_seconds: float = 0.5,
        spatial_n_filters: int = 16,
        spatial_kernel_size: int = 25,
        spatial_stride: int = 5,
        ffn_expansion: int = 4,
        drop_prob: float = 0.5,
        att_drop_prob: float = 0.5,
        head_drop_probs: tuple[float, float] = (0.5, 0.3),
        attention_scale: str = "embedding",
        pos_init_std: float = 1.0,
    ):
        super().__init__(
            n_outputs=n_outputs,
            n_chans=n_chans,
            chs_info=chs_info,
            n_times=n_times,
            input_window_seconds=input_window_seconds,
            sfreq=sfreq,
        )
        del n_outputs, n_chans, chs_info, n_times, input_window_seconds, sfreq
        if emb_size % num_heads:
            raise ModelError(
                f"DBConformer needs emb_size divisible by num_heads; got emb_size={emb_size}, "
                f"num_heads={num_heads}"
            )
        if attention_scale not in _ATTENTION_SCALES:
            raise ModelError(
                f"attention_scale must be one of {_ATTENTION_SCALES}; got {attention_scale!r}"
            )
        if self.n_times < 1 or self.n_chans < 1 or self.n_outputs < 1:
            raise ModelError(
                "DBConformer needs positive n_chans, n_times and n_outputs; got "
                f"n_chans={self.n_chans}, n_times={self.n_times}, n_outputs={self.n_outputs}"
            )
        self.emb_size = emb_size
        self.num_heads = num_heads
        self.temporal_depth = temporal_depth
        self.spatial_depth = spatial_depth
        self.temporal_kernel_size = temporal_kernel_size
        self.patch_seconds = patch_seconds
        self.spatial_n_filters = spatial_n_filters
        self.spatial_kernel_size = spatial_kernel_size
        self.spatial_stride = spatial_stride
        self.ffn_expansion = ffn_expansion
        self.drop_prob = drop_prob
        self.att_drop_prob = att_drop_prob
        self.head_drop_probs = head_drop_probs
        self.attention_scale = attention_scale
        self.pos_init_std = pos_init_std

        self.patch_size = min(max(1, round(patch_seconds * self.sfreq)), self.n_times)
        self.n_patches = self.n_times // self.patch_size
        scale_dim = emb_size if attention_scale == "embedding" else emb_size // num_heads
        scale = 1.0 / math.sqrt(scale_dim)

        def encoder(depth):
            return nn.Sequential(
                *(
                    _EncoderBlock(emb_size, num_heads, ffn_expansion, drop_prob, att_drop_prob, scale)
                    for _ in range(depth)
                )
            )

        self.temporal_embedding = _TemporalPatchEmbedding(
            self.n_chans, emb_size, temporal_kernel_size, self.patch_size, drop_prob
        )
        self.spatial_embedding = _ChannelTokenEmbedding(
            emb_size, spatial_n_filters, spatial_kernel_size, spatial_stride
        )
        self.pos_embedding_temporal = nn.Parameter(torch.randn(1, self.n_patches, emb_size) * pos_init_std)
        self.pos_embedding_spatial = nn.Parameter(torch.randn(1, self.n_chans, emb_size) * pos_init_std)
        self.temporal_encoder = encoder(temporal_depth)
        self.spatial_encoder = encoder(spatial_depth)
        self.channel_attention = nn.Sequential(
            nn.Linear(emb_size, emb_size), nn.Tanh(), nn.Linear(emb_size, 1)
        )
        self.classification_head = nn.Sequential(
            nn.Linear(2 * emb_size, 64),
            nn.ELU(),
            nn.Dropout(head_drop_probs[0]),
            nn.Linear(64, 32),
            nn.ELU(),
            nn.Dropout(head_drop_probs[1]),
        )
        self.final_layer = nn.Linear(32, self.n_outputs)

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 3 or x.shape[1] != self.n_chans or x.shape[2] != self.n_times:
            raise ModelError(
                f"DBConformer expects input of shape (batch, {self.n_chans}, {self.n_times}); "
                f"got {tuple(x.shape)}"
            )

    def _spatial_tokens(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Encoded channel tokens (B, C, D) and their attention weights (B, C)."""
        tokens = self.spatial_encoder(self.spatial_embedding(x) + self.pos_embedding_spatial)
        weights = torch.softmax(self.channel_attention(tokens).squeeze(-1), dim=1)
        return tokens, weights

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(batch, n_outputs)`` for ``x`` of shape ``(batch, n_chans, n_times)``."""
        self._check_input(x)
        temporal = self.temporal_encoder(self.temporal_embedding(x) + self.pos_embedding_temporal)
        spatial, weights = self._spatial_tokens(x)
        x_s = torch.einsum("bc,bcd->bd", weights, spatial)
        fused = torch.cat([temporal.mean(dim=1), x_s], dim=-1)
        return self.final_layer(self.classification_head(fused))

    def channel_weights(self, x: Tensor) -> Tensor:
        """Attention weights over channels ``(batch, n_chans)``, each row summing to 1.

        These are the softmax scores with which the spatial tokens are pooled
        (for topographic maps of what the model attends to). Computed in the
        module's current mode; call ``eval()`` first for deterministic weights.
        """
        self._check_input(x)
        return self._spatial_tokens(x)[1]
