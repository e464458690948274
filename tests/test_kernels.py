"""Tests of the MVPA attention kernels (``kernels/``).

- the PyTorch reference against a direct loop over (query, key) pairs written
  from the definition, in float64, and against braindecode's ``_MVPAttention``;
- the Triton forward and backward against the reference, on CPU under the
  Triton interpreter. ``TRITON_INTERPRET=1`` must be set before the kernels are
  first defined, which this process cannot guarantee once other tests ran, so
  those checks run in one subprocess (this file executed as a script) whose
  per-case errors the tests below assert on;
- the streaming KV cache against the full recompute;
- the same Triton checks in-process on a CUDA device when one is present.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch

from bci.errors import ModelError
from kernels import MVPAKVCache, mvpa_attention, mvpa_attention_last_segment, select_backend
from kernels.reference import mvpa_attention_reference
from kernels.testing import GRAD_NAMES, errors_vs_float64, random_inputs, streaming_vs_full

REPO = Path(__file__).resolve().parents[1]


def naive_mvpa(q, k, v, bias_time, bias_chan, n_channels, window, scale):
    """MVPA by a direct loop over every (query, key) pair, straight from the definition."""
    B, H, N, D = q.shape
    G = H // k.shape[1]
    C, T = n_channels, N // n_channels
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for n in range(N):
                t, c = divmod(n, C)
                scores, values = [], []
                for m in range(N):
                    t2, c2 = divmod(m, C)
                    if t2 > t:
                        continue
                    w = 1.0 if (t - t2 <= window or t == T - 1) else 0.0
                    content = float(q[b, h, n] @ k[b, h // G, m])
                    scores.append(scale * (w * content + float(bias_time[b, h, n, t - t2])
                                           + float(bias_chan[b, h, n, abs(c - c2)])))
                    values.append(v[b, h // G, m])
                top = max(scores)
                weights = [math.exp(s - top) for s in scores]
                total = sum(weights)
                out[b, h, n] = sum(wt / total * val for wt, val in zip(weights, values))
    return out


# (B, T, C, H, Hkv, D, window)
REFERENCE_SHAPES = [
    (1, 4, 3, 2, 1, 8, 1),    # GQA, window < T
    (2, 3, 2, 2, 2, 4, 10),   # window >= T: content everywhere
    (1, 5, 1, 3, 1, 4, 0),    # one channel, window 0
    (1, 1, 6, 2, 2, 4, 2),    # one segment: fully bidirectional
]


@pytest.mark.parametrize("shape", REFERENCE_SHAPES)
def test_reference_matches_direct_loop(shape):
    B, T, C, H, Hkv, D, window = shape
    q, k, v, bt, bc = random_inputs(B, T, C, H, Hkv, D)
    scale = 0.7
    got = mvpa_attention_reference(q, k, v, bt, bc, n_channels=C, window=window, scale=scale)
    want = naive_mvpa(q, k, v, bt, bc, C, window, scale)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_reference_default_scale_and_window_semantics():
    """scale defaults to 1/sqrt(D); the content term of far keys is 0, not -inf."""
    B, T, C, H, D = 1, 5, 2, 1, 4
    q, k, v, bt, bc = random_inputs(B, T, C, H, H, D)
    out = mvpa_attention_reference(q, k, v, bt, bc, n_channels=C, window=1)
    torch.testing.assert_close(out, naive_mvpa(q, k, v, bt, bc, C, 1, 1 / math.sqrt(D)), rtol=0, atol=1e-12)
    # a query of segment 3 sees keys of segment 0 (3 - 0 > window) with weight > 0
    zero_rel = [torch.zeros_like(bt), torch.zeros_like(bc)]
    v_probe = torch.zeros_like(v)
    v_probe[..., 0, 0] = 1.0  # token (0, 0)
    out = mvpa_attention_reference(q * 100, k, v_probe, *zero_rel, n_channels=C, window=1)
    assert 0 < out[0, 0, 3 * C, 0] < 1


def test_reference_gradients_gradcheck():
    q, k, v, bt, bc = random_inputs(1, 3, 2, 2, 1, 4, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *x: mvpa_attention_reference(*x, n_channels=2, window=1), (q, k, v, bt, bc)
    )


def test_reference_half_precision_computes_in_float32():
    q, k, v, bt, bc = random_inputs(1, 4, 3, 2, 1, 8, seed=3)
    want = mvpa_attention_reference(q, k, v, bt, bc, n_channels=3, window=1)
    got = mvpa_attention_reference(*(x.to(torch.bfloat16) for x in (q, k, v, bt, bc)), n_channels=3, window=1)
    assert got.dtype == torch.bfloat16
    assert (got.double() - want).abs().max() < 0.05


def test_matches_braindecode_mvpattention():
    """The DESIGN 3b recipe reproduces braindecode's _MVPAttention to float64 precision."""
    mvpformer = pytest.importorskip("braindecode.models.mvpformer")
    torch.manual_seed(torch.seed() % 2**31)
    B, T, C, d_model, H, Hkv, window = 2, 7, 5, 32, 4, 2, 2
    att = mvpformer._MVPAttention(d_model, H, Hkv, True, window).double().eval()
    x = torch.randn(B, T, C, d_model, dtype=torch.float64)
    pos, chan = torch.randn(B, T, d_model, dtype=torch.float64), torch.randn(B, C, d_model, dtype=torch.float64)
    D, G, N = d_model // H, H // Hkv, T * C
    with torch.no_grad():
        want = att(x, pos, chan)
        q = att.q_attn(x).reshape(B, N, H, D).transpose(1, 2)
        k, v = (y.reshape(B, N, Hkv, D).transpose(1, 2) for y in att.c_attn(x).split(att.kv_dim, -1))
        key_t = att.position_net(pos).reshape(B, T, Hkv, D).transpose(1, 2).repeat_interleave(G, 1)
        key_c = att.channel_net(chan).reshape(B, C, Hkv, D).transpose(1, 2).repeat_interleave(G, 1)
        u, bias_v, z = (b.reshape(Hkv, D).repeat_interleave(G, 0)[None, :, None]
                        for b in att.attn_bias.split(att.kv_dim))
        bias_time = torch.einsum("bhnd,bhtd->bhnt", q + bias_v, key_t.flip(2))  # d -> Kt[T-1-d]
        bias_chan = torch.einsum("bhnd,bhcd->bhnc", q + z, key_c.flip(2))  # d -> Kc[C-1-d]
        out = mvpa_attention(q + u, k, v, bias_time, bias_chan, n_channels=C, window=window, backend="reference")
        got = att.c_proj(out.transpose(1, 2).reshape(B, T, C, d_model))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-14)


def test_dispatch_on_cpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert select_backend("cpu", "auto") == "reference"
    assert select_backend("cpu", "reference") == "reference"
    with pytest.raises(ModelError, match="TRITON_INTERPRET"):
        select_backend("cpu", "triton")
    with pytest.raises(ModelError, match="backend must be one of"):
        select_backend("cpu", "cuda")
    q, k, v, bt, bc = random_inputs(1, 3, 2, 2, 1, 4, dtype=torch.float32)
    with pytest.raises(ModelError, match="needs CUDA tensors"):
        mvpa_attention(q, k, v, bt, bc, n_channels=2, backend="triton")
    auto = mvpa_attention(q, k, v, bt, bc, n_channels=2, window=1)
    torch.testing.assert_close(auto, mvpa_attention_reference(q, k, v, bt, bc, n_channels=2, window=1))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda x: x.update(k=x["k"][:, :, :-2], v=x["v"][:, :, :-2]), "k/v must be"),
        (lambda x: x.update(bias_time=x["bias_time"][..., :-1]), r"bias_time must be \(B, H, N, T\)"),
        (lambda x: x.update(bias_chan=x["bias_chan"][..., :-1]), r"bias_chan must be \(B, H, N, C\)"),
        (lambda x: x.update(n_channels=4), "multiple of n_channels=4"),
        (lambda x: x.update(k=x["k"][:, :1].expand(1, 3, 6, 4), v=x["v"][:, :1].expand(1, 3, 6, 4)),
         r"multiple of key/value heads \(3\)"),
        (lambda x: x.update(window=-1), "window must be a non-negative int"),
        (lambda x: x.update(q=x["q"][0]), "q must have 4 dimensions"),
    ],
)
def test_bad_input_raises_model_error(change, message):
    q, k, v, bt, bc = random_inputs(1, 3, 2, 2, 1, 4)
    args = dict(q=q, k=k, v=v, bias_time=bt, bias_chan=bc, n_channels=2, window=1)
    change(args)
    with pytest.raises(ModelError, match=message):
        mvpa_attention(**args)


def test_streaming_equals_full_recompute_reference():
    # window 1 < context: inner segments are windowed in the full recompute, the newest is not;
    # 9 steps with max_segments 4 fill the cache, slide it and compact its buffer twice
    worst = streaming_vs_full(2, 3, 4, 2, 8, window=1, max_segments=4, n_steps=9,
                              dtype=torch.float64, device="cpu", backend="reference")
    assert worst < 1e-12


def test_last_segment_bad_input():
    q, k, v, bt, bc = random_inputs(1, 3, 2, 2, 1, 4)
    with pytest.raises(ModelError, match="one segment of n_channels=2"):
        mvpa_attention_last_segment(q, k, v, bt[:, :, -2:], bc[:, :, -2:], n_channels=2)
    with pytest.raises(ModelError, match=r"bias tables must be \(B, H, C, T\)"):
        mvpa_attention_last_segment(q[:, :, -2:], k, v, bt[:, :, -2:, :2], bc[:, :, -2:], n_channels=2)
    cache = MVPAKVCache(n_channels=2, max_segments=3)
    with pytest.raises(ModelError, match="nothing cached"):
        cache.attend(q[:, :, -2:], bt[:, :, -2:], bc[:, :, -2:])
    with pytest.raises(ModelError, match="must both be"):
        cache.append(k, v)
    cache.append(k[:, :, :2], v[:, :, :2])
    with pytest.raises(ModelError, match="does not match the cache"):
        cache.append(k[:, :, :2].float(), v[:, :, :2].float())


# ----------------------------------------------------------------------------------------------
# Triton kernels vs the reference

# (B, T, C, H, Hkv, D, window): GQA, windows smaller than T (so far tiles are skipped in the
# forward, the dQ and the dK/dV kernels), padded channel tiles, one channel, head dims 16-128
TRITON_SHAPES = [
    (1, 5, 3, 2, 1, 16, 1),
    (2, 6, 5, 4, 2, 32, 2),
    (1, 10, 9, 3, 1, 16, 2),
    (1, 20, 2, 2, 2, 16, 1),
    (1, 40, 1, 2, 1, 32, 3),
    (1, 4, 4, 2, 1, 64, 10),
    (1, 3, 3, 1, 1, 128, 0),
]


def triton_vs_reference(shape, dtype, device):
    """Relative errors of the Triton forward/backward against the float64 reference (fresh inputs)."""
    triton = partial(mvpa_attention, backend="triton")
    return errors_vs_float64({"triton": triton}, shape, dtype, device)["triton"]


def _triton_worker():
    """Run every interpreter check (this file as a script, TRITON_INTERPRET=1) and print JSON."""
    assert os.environ.get("TRITON_INTERPRET") == "1"
    torch.set_num_threads(1)
    report = {"fp32": [triton_vs_reference(s, torch.float32, "cpu") for s in TRITON_SHAPES]}
    report["fp16"] = triton_vs_reference((1, 6, 3, 2, 1, 16, 2), torch.float16, "cpu")
    report["streaming"] = streaming_vs_full(2, 3, 4, 2, 16, window=1, max_segments=3, n_steps=5,
                                            dtype=torch.float32, device="cpu", backend="triton")
    try:
        mvpa_attention(*random_inputs(1, 2, 200, 1, 1, 16, dtype=torch.float32), n_channels=200,
                       backend="triton")
        report["too_many_channels"] = None
    except ModelError as err:
        report["too_many_channels"] = str(err)
    print("RESULT " + json.dumps(report))


@pytest.fixture(scope="module")
def interpreter_report():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(TRITON_SHAPES)), ids=[str(s) for s in TRITON_SHAPES])
def test_triton_interpreter_matches_reference_fp32(interpreter_report, index):
    errors = interpreter_report["fp32"][index]
    assert set(errors) == set(GRAD_NAMES)
    assert max(errors.values()) < 1e-3, errors


@pytest.mark.slow
def test_triton_interpreter_fp16(interpreter_report):
    errors = interpreter_report["fp16"]
    assert max(errors.values()) < 1e-2, errors


@pytest.mark.slow
def test_triton_interpreter_streaming_equals_full_recompute(interpreter_report):
    assert interpreter_report["streaming"] < 1e-5


@pytest.mark.slow
def test_triton_rejects_too_many_channels(interpreter_report):
    assert "at most 128 channels" in interpreter_report["too_many_channels"]


# (dtype, C, D): compiled ahead of time for an H100 (sm_90) without a GPU
COMPILE_CONFIGS = [("bf16", 22, 64), ("bf16", 128, 128), ("bf16", 1, 16), ("fp32", 22, 64), ("fp32", 128, 64)]
H100_SHARED_BYTES = 232448


def _compile_worker():
    """Compile every kernel for sm_90 with the launch configs of ``_config``; print shared memory."""
    from triton import compile as triton_compile
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from kernels import triton_mvpa

    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    fp32_pointers = {"LSE", "DELTA", "DBT", "DBC_KEY"}
    integers = {"Nq", "N", "T", "C", "WINDOW", "Q_OFF", "H", "G"}
    kernels = [triton_mvpa._mvpa_fwd_kernel, triton_mvpa._mvpa_bwd_dq_kernel, triton_mvpa._mvpa_bwd_dkdv_kernel]
    report = {}
    for name, C, D in COMPILE_CONFIGS:
        block_m, segs, c_pad, warps, stages = triton_mvpa._config(C, D, torch.device("cuda"), dtypes[name])
        consts = dict(BLOCK_M=block_m, SEGS=segs, C_PAD=c_pad, BLOCK_D=D,
                      DOT_PREC=triton_mvpa._dot_precision(dtypes[name]))
        for kernel in kernels:
            signature = {}
            for arg in kernel.arg_names:
                if arg in consts:
                    signature[arg] = "constexpr"
                elif "scale" in arg:
                    signature[arg] = "fp32"
                elif arg in integers or arg.startswith("stride_"):
                    signature[arg] = "i32"
                else:
                    signature[arg] = "*fp32" if arg in fp32_pointers else f"*{name}"
            source = ASTSource(fn=kernel, signature=signature,
                               constexprs={(kernel.arg_names.index(k),): v for k, v in consts.items()})
            compiled = triton_compile(source, target=GPUTarget("cuda", 90, 32),
                                      options={"num_warps": warps, "num_stages": stages})
            report[f"{name} C={C} D={D} {kernel.fn.__name__}"] = compiled.metadata.shared
    print("RESULT " + json.dumps(report))


@pytest.mark.slow
def test_kernels_compile_for_h100_within_shared_memory():
    """Without a GPU: the kernels compile for sm_90 and fit its shared memory at our block sizes."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, __file__, "--compile"], env=env, capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    shared = json.loads(lines[-1][len("RESULT "):])
    assert len(shared) == 3 * len(COMPILE_CONFIGS)
    assert all(0 < used <= H100_SHARED_BYTES for used in shared.values()), shared


cuda_ampere = pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)),
    reason="needs a CUDA GPU of compute capability >= 8.0",
)
GPU_SHAPES = [(2, 25, 22, 12, 4, 64, 10), (1, 12, 64, 12, 4, 64, 3), (1, 6, 128, 4, 4, 128, 2),
              (1, 30, 7, 4, 2, 32, 10)]


@cuda_ampere
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=str)
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-3), (torch.bfloat16, 3e-2)], ids=str)
def test_triton_cuda_matches_reference(shape, dtype, tolerance):
    assert select_backend("cuda", "auto") == "triton"
    errors = triton_vs_reference(shape, dtype, "cuda")
    assert max(errors.values()) < tolerance, errors


@cuda_ampere
def test_triton_cuda_streaming_equals_full_recompute():
    worst = streaming_vs_full(2, 64, 12, 4, 64, window=10, max_segments=25, n_steps=30,
                              dtype=torch.float32, device="cuda", backend="triton")
    assert worst < 1e-4


if __name__ == "__main__":
    _compile_worker() if "--compile" in sys.argv else _triton_worker()
