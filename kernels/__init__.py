"""MVPA attention kernels: the PyTorch reference, the fused Triton kernel, streaming.

``mvpa_attention`` is the entry point (it picks the backend by device, see
:mod:`kernels.dispatch`); ``MVPAKVCache``/``mvpa_attention_last_segment`` are the
incremental path that appends one time segment at a time. Nothing
model-specific lives here. Importing this package never imports ``triton``.
"""

from kernels.dispatch import mvpa_attention, select_backend
from kernels.reference import mvpa_attention_reference
from kernels.streaming import MVPAKVCache, mvpa_attention_last_segment

__all__ = [
    "MVPAKVCache",
    "mvpa_attention",
    "mvpa_attention_last_segment",
    "mvpa_attention_reference",
    "select_backend",
]
