"""MVPFormer model, braindecode equivalence, streaming, pretraining and LoRA."""

import csv
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bci.errors import ModelError
from models.mvpformer import MVPFormer, codebook_rows, segment_samples
from models.pretrain import (
    ChannelCountBatchSampler,
    LoRALinear,
    contrastive_loss,
    load_pretraining,
    prepare_finetune,
    pretrain,
)

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
BONN = DATA / "seizure" / "bonn"
MALOW = DATA / "seizure" / "malow"
L = 64  # segment length of the small test models


def tiny(**kw):
    torch.manual_seed(kw.pop("seed", 0))
    kw = {"size": "tiny", "segment_len": L, "drop_prob": 0.0, **kw}
    return MVPFormer(**kw).eval()


def randomize(model, std=0.3, seed=1):
    """Larger-than-init random weights so every term matters in the comparisons."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def test_tiny_forward_backward_8x21_on_cpu():
    model = tiny().train()
    x = torch.randn(2, 21, 8 * L)
    t0 = time.perf_counter()
    logits = model(x)
    logits.logsumexp(-1).sum().backward()
    elapsed = time.perf_counter() - t0
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    for name, p in model.named_parameters():
        if name != "pretrain_head.weight":  # not on the seizure path
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    # 8 segments use time codebook rows 0..7 only, 21 channels rows 0..20
    assert model.positional_embedding.weight.grad[8:].abs().sum() == 0
    assert model.channel_embedding.weight.grad[21:].abs().sum() == 0
    assert elapsed < 5.0
    assert sum(p.numel() for p in model.parameters()) < 200_000


def test_presets_sizes():
    s = MVPFormer(size="S", segment_len=2560)
    n = sum(p.numel() for p in s.parameters()) - s.pretrain_head.weight.numel()
    assert 72e6 < n < 76e6  # published MVPFormer-S: about 74-75M
    assert (s.d_model, s.n_layers, s.n_heads, s.n_head_kv) == (768, 12, 12, 4)
    assert MVPFormer(size="S", d_model=96, n_heads=4, n_head_kv=2).d_model == 96


@pytest.mark.parametrize("n_chans, n_segments", [(5, 6), (3, 4), (8, 10), (1, 1)])
def test_from_braindecode_same_outputs(n_chans, n_segments):
    from braindecode.models import MVPFormer as BraindecodeMVPFormer

    torch.manual_seed(0)
    theirs = BraindecodeMVPFormer(
        n_outputs=3, n_chans=5, n_times=6 * L, sfreq=100.0, segment_len=L,
        d_model=32, n_layers=2, n_heads=4, n_head_kv=2, d_inner=48,
        local_window=2, max_segments=10, max_channels=8,
    )
    randomize(theirs).eval()
    ours = MVPFormer.from_braindecode(theirs).eval()
    assert ours.codebook_indexing == "reference" and ours.n_outputs == 3
    x = torch.randn(2, n_chans, n_segments * L, dtype=torch.float64)
    with torch.no_grad():
        ref64 = theirs.double()(x)
        out64 = ours.double()(x)
        ref32 = theirs.float()(x.float())
        out32 = ours.float()(x.float())
    assert ref64.abs().max() > 0.05
    # braindecode rounds its wavelet features to float32 even in float64
    torch.testing.assert_close(out64, ref64, rtol=0, atol=1e-6)
    torch.testing.assert_close(out32, ref32, rtol=1e-4, atol=1e-5)


def test_codebook_indexing_rows():
    assert codebook_rows(4, "distance").tolist() == [0, 1, 2, 3]
    assert codebook_rows(4, "reference").tolist() == [3, 2, 1, 0]
    x = torch.randn(1, 3, 4 * L)

    def first_changed_segment(indexing, row):
        model = randomize(tiny(codebook_indexing=indexing))
        with torch.no_grad():
            before = model.encode(x)
            model.positional_embedding.weight[row] += 1.0
            change = (model.encode(x) - before).abs().amax(dim=(0, 2, 3))
        return int(torch.nonzero(change > 1e-4)[0])

    # a time distance d first matters for segment d (segment 0 sees distance 0
    # only, a constant shift of its scores that the softmax ignores): row d is
    # distance d when indexing by distance, distance T-1-d = 3-d in the reference
    assert first_changed_segment("distance", 1) == 1
    assert first_changed_segment("distance", 3) == 3
    assert first_changed_segment("reference", 1) == 2
    assert first_changed_segment("reference", 0) == 3


def test_distance_indexing_prefix_invariant_reference_is_not():
    # with T <= local_window + 1 every segment sees the full content term, so a
    # causal model's prefix outputs cannot depend on what follows - unless the
    # codebook rows move with T (the reference indexing)
    x = torch.randn(2, 4, 6 * L, dtype=torch.float64)
    for indexing, same in (("distance", True), ("reference", False)):
        model = randomize(tiny(codebook_indexing=indexing)).double()
        with torch.no_grad():
            full = model.encode(x)[:, :4]
            prefix = model.encode(x[..., : 4 * L])
        gap = (full - prefix).abs().max().item()
        assert (gap < 1e-12) if same else (gap > 1e-3), (indexing, gap)


def test_same_weights_any_channel_count_and_channel_reversal():
    model = randomize(tiny(), std=0.1).double()
    with torch.no_grad():
        for c in (1, 2, 7, 21, 128):
            out = model(torch.randn(2, c, 3 * L, dtype=torch.float64))
            assert out.shape == (2, 2) and torch.isfinite(out).all()
        # channel-relative terms use |c - c'|: reversing the montage reverses the
        # hidden states channel-wise and leaves the (channel-mean) logits unchanged
        x = torch.randn(2, 9, 5 * L, dtype=torch.float64)
        h, h_rev = model.encode(x), model.encode(x.flip(1))
        torch.testing.assert_close(h_rev, h.flip(2), rtol=0, atol=1e-12)
        torch.testing.assert_close(model(x.flip(1)), model(x), rtol=0, atol=1e-12)
        # ... but the order matters otherwise (the model is not a bag of channels)
        perm = torch.tensor([3, 0, 8, 1, 5, 2, 7, 4, 6])
        assert (model.encode(x[:, perm])[:, :, torch.argsort(perm)] - h).abs().max() > 1e-4


def test_channel_weights_sum_to_logits():
    model = randomize(tiny(), std=0.1)
    x = torch.randn(3, 6, 4 * L)
    with torch.no_grad():
        w = model.channel_weights(x)
        logits = model(x)
    assert w.shape == (3, 6, 2)
    torch.testing.assert_close(w.sum(1), logits, rtol=1e-5, atol=1e-6)
    assert w.std(1).abs().min() > 0  # channels do differ


@pytest.mark.parametrize(
    "shape, limit",
    [
        ((1, 129, 2 * L), "max_channels=128"),
        ((1, 2, 111 * L), "max_segments=110"),
        ((1, 2, L - 1), "shorter than one segment"),
        ((1, 2, 3 * L + 5), "not a whole number of segments"),
    ],
)
def test_bad_input_names_the_limit(shape, limit):
    model = tiny()
    with pytest.raises(ModelError, match=limit):
        model(torch.randn(*shape))


def test_bad_config_and_rates():
    with pytest.raises(ModelError, match="not a whole number|whole, positive"):
        segment_samples(173.61, 5.0)
    assert segment_samples(512.0, 5.0) == 2560
    assert segment_samples(100.0, 5.0) == 500
    with pytest.raises(ModelError, match="size"):
        MVPFormer(size="XL")
    with pytest.raises(ModelError, match="codebook_indexing"):
        MVPFormer(codebook_indexing="absolute")
    with pytest.raises(ModelError, match="max_channels=128"):
        MVPFormer(n_chans=200)
    with pytest.raises(ModelError, match="whole number of segments"):
        MVPFormer(n_times=1000, segment_len=256)
    with pytest.raises(ModelError, match="batch, n_channels, n_samples"):
        tiny()(torch.randn(4, 8 * L))


# ----------------------------------------------------------------- streaming
def _stream(model, x, n_channels, context=None):
    state = model.init_stream(n_channels, context)
    outs = [model.step(state, x[..., t * L:(t + 1) * L]) for t in range(x.shape[-1] // L)]
    return state, torch.stack(outs, 1)


def test_streaming_one_layer_is_exact_including_eviction():
    model = randomize(tiny(n_layers=1, local_window=2), std=0.1).double()
    x = torch.randn(2, 5, 7 * L, dtype=torch.float64)
    state, streamed = _stream(model, x, 5)
    with torch.no_grad():
        full = torch.stack([model.encode(x[..., : (t + 1) * L])[:, -1] for t in range(7)], 1)
    torch.testing.assert_close(streamed, full, rtol=0, atol=1e-12)
    assert state.n_seen == 7 and state.n_cached == 7
    # bounded context: the last 3 segments only
    state, streamed = _stream(model, x, 5, context=3)
    assert state.n_cached == 3
    with torch.no_grad():
        last = model.encode(x[..., 4 * L:])[:, -1]
    torch.testing.assert_close(streamed[:, -1], last, rtol=0, atol=1e-12)


def test_streaming_deep_model_exact_within_window_then_approximate():
    model = randomize(tiny(n_layers=2, local_window=2), std=0.1).double()
    x = torch.randn(1, 4, 8 * L, dtype=torch.float64)
    _, streamed = _stream(model, x, 4)
    with torch.no_grad():
        full = torch.stack([model.encode(x[..., : (t + 1) * L])[:, -1] for t in range(8)], 1)
    err = (streamed - full).abs().amax(dim=(0, 2, 3))
    # exact while T <= window + 2: every segment before the newest one saw its whole
    # past both when it was cached (as the last segment) and in the full recompute
    assert err[:4].max() < 1e-12
    assert err[4:].min() > 1e-6  # later: cached states saw more than the window
    with pytest.raises(ModelError, match="opened for 4 channels"):
        model.step(model.init_stream(4), torch.randn(1, 3, L))


# --------------------------------------------------------------- pretraining
def _bonn_windows(n_per_set=6, n_segments=8, segment_len=256):
    windows = []
    for folder in ("A_Z", "E_S"):
        for f in sorted((BONN / folder).glob("*.txt"))[:n_per_set]:
            sig = np.loadtxt(f, dtype=np.float32)[: n_segments * segment_len]
            windows.append(sig[None])
    return windows


def test_contrastive_loss_values():
    torch.manual_seed(0)
    t = torch.randn(6, 16)
    perfect = contrastive_loss(t * 3.0, t)  # cosine: scale does not matter
    shuffled = contrastive_loss(t[torch.randperm(6)], t)
    assert perfect < 0.5 < shuffled
    # uniform similarities give log(M)
    uniform = contrastive_loss(torch.ones(5, 4), torch.ones(5, 4))
    assert uniform.item() == pytest.approx(np.log(5))
    gen = torch.Generator().manual_seed(0)
    sampled = contrastive_loss(t * 3.0, t, n_negatives=3, generator=gen)
    assert sampled < perfect  # fewer negatives, easier


def test_sampler_groups_by_channel_count_and_is_deterministic():
    shapes = [(1, 512)] * 5 + [(21, 512)] * 4 + [(3, 256)] * 3
    sampler = ChannelCountBatchSampler(shapes, 2, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(12))
    assert all(len({shapes[i] for i in b}) == 1 for b in batches)
    assert batches == list(ChannelCountBatchSampler(shapes, 2, seed=3))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    sampler.set_start(2)
    assert len(list(sampler)) == len(batches) - 2
    # DDP: two ranks get disjoint halves
    r0 = list(ChannelCountBatchSampler(shapes, 2, seed=3, rank=0, world_size=2))
    r1 = list(ChannelCountBatchSampler(shapes, 2, seed=3, rank=1, world_size=2))
    assert len(r0) == len(r1) and not {i for b in r0 for i in b} & {i for b in r1 for i in b}


@pytest.mark.slow
def test_pretraining_loss_decreases_on_bonn_and_resume_continues(tmp_path):
    windows = _bonn_windows()
    cfg = {"size": "tiny", "segment_len": 256, "drop_prob": 0.1}
    kw = dict(batch_size=4, lr=3e-3, seed=0, progress=False, checkpoint_every=4)
    full = pretrain(windows, cfg, tmp_path / "full", steps=40, **kw)
    with open(full["loss_csv"]) as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert len(losses) == 40
    # 4 windows x 7 next-segment pairs: chance is log(28) = 3.3
    assert np.mean(losses[:5]) > 2.5
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert Path(full["loss_png"]).stat().st_size > 1000

    # interrupted at step 8, resumed to 12: same losses as the uninterrupted run
    part = pretrain(windows, cfg, tmp_path / "part", steps=8, **kw)
    assert part["start_step"] == 0 and part["step"] == 8
    resumed = pretrain(windows, cfg, tmp_path / "part", steps=12, **kw)
    assert resumed["start_step"] == 8 and resumed["step"] == 12
    with open(resumed["loss_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    np.testing.assert_allclose([float(r["loss"]) for r in rows], losses[:12], rtol=1e-4)
    again = pretrain(windows, cfg, tmp_path / "part", steps=12, **kw)
    assert again["start_step"] == again["step"] == 12

    model = load_pretraining(tmp_path / "full")
    state = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    assert torch.equal(model.pretrain_head.weight, state["pretrain_head.weight"])


def test_pretrain_mixed_channel_counts(tmp_path):
    rng = np.random.default_rng(0)
    windows = [rng.standard_normal((c, 3 * L)).astype(np.float32) for c in (1, 1, 4, 4, 4, 2)]
    out = pretrain(windows, {"size": "tiny", "segment_len": L}, tmp_path, steps=3,
                   batch_size=2, lr=1e-3, seed=0, progress=False)
    assert out["batches_per_epoch"] == 4 and out["step"] == 3


# ------------------------------------------------------------------ fine-tuning
def test_lora_trains_only_adapters_and_head():
    model = tiny(n_layers=2).train()
    x = torch.randn(8, 3, 4 * L)
    y = torch.tensor([0, 1] * 4)
    with torch.no_grad():
        before = model(x)
    params = prepare_finetune(model, "lora", rank=8)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(("lora_" in n) or n.startswith("final_layer") for n in names)
    # per block: q, kv, out projections and gate, up, down
    assert sum(isinstance(m, LoRALinear) for m in model.modules()) == 2 * 6
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)  # B = 0: unchanged at start
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(params, lr=1e-2)
    losses = []
    for _ in range(10):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for n, p in model.named_parameters():
        changed = not torch.equal(p, snapshot[n])
        assert changed == (n in names), n
    assert len(prepare_finetune(tiny(), "head")) == 1
    full = tiny()
    assert len(prepare_finetune(full, "full")) == sum(1 for _ in full.parameters()) - 1


# ------------------------------------------------------------------ amplitude
def test_amplitude_bands_sees_the_scale_the_reference_tokenizer_does_not():
    from braindecode.functional import daubechies_filters, wavelet_decomposition

    from models.mvpformer import wavelet_band_sizes

    for n in (8, 9, 64, 100, 257, 2560):  # the bands tile the decomposition
        assert sum(wavelet_band_sizes(n)) == wavelet_decomposition(torch.zeros(1, n), daubechies_filters(4)).shape[-1]
    assert wavelet_band_sizes(100) == [18, 18, 30, 53]  # cA3, cD3, cD2, cD1
    off, on = tiny(), tiny(amplitude="bands")
    # off: braindecode's parameters only; on: one more projection, n_bands -> d_model
    assert set(on.state_dict()) - set(off.state_dict()) == {"patch_embed.amp_proj.weight"}
    assert on.patch_embed.amp_proj.weight.shape == (on.d_model, len(wavelet_band_sizes(L)))
    x = torch.randn(2, 3, 4 * L)
    with torch.no_grad():
        torch.testing.assert_close(off(3 * x), off(x), rtol=0, atol=1e-5)  # normalised away
        assert (on(3 * x) - on(x)).abs().max() > 1e-3  # kept
        # the added term is amp_proj of each band's log RMS: x 3 shifts every band by log 3
        emb, seg = on.patch_embed, x[..., :L]  # the tokenizer takes segments (..., segment_len)
        ident = torch.zeros_like(emb.amp_proj.weight)
        ident[: ident.shape[1]] = torch.eye(ident.shape[1])
        emb.amp_proj.weight.copy_(ident)
        log_rms, log_rms3 = ((emb(s) - emb.proj(emb.ln(wavelet_decomposition(s, emb._filters))))[..., : ident.shape[1]]
                             for s in (seg, 3 * seg))  # fmt: skip
    torch.testing.assert_close(log_rms3 - log_rms, torch.full_like(log_rms, np.log(3.0)), rtol=0, atol=1e-3)
    first = wavelet_decomposition(seg, emb._filters)[..., : wavelet_band_sizes(L)[0]]  # cA: the first band
    torch.testing.assert_close(log_rms[..., 0], 0.5 * torch.log(first.square().mean(-1) + 1e-5), rtol=0, atol=1e-5)
    with pytest.raises(ModelError, match=r"amplitude must be one of \('none', 'bands'\), got 'log'"):
        tiny(amplitude="log")


def test_streaming_with_amplitude_equals_full_recompute():
    model = randomize(tiny(n_layers=1, local_window=2, amplitude="bands"), std=0.1).double()
    x = 5.0 * torch.randn(2, 3, 6 * L, dtype=torch.float64)
    _, streamed = _stream(model, x, 3)
    with torch.no_grad():
        full = torch.stack([model.encode(x[..., : (t + 1) * L])[:, -1] for t in range(6)], 1)
    torch.testing.assert_close(streamed, full, rtol=0, atol=1e-12)


def test_amplitude_kept_by_saved_classifier_stream_and_pretraining(tmp_path):
    from bci.errors import ConfigError
    from pipelines.deep import DeepClassifier, make_deep_pipeline

    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 2, 3 * L)) * 1e-5
    X[8:] *= 4  # the "seizures": the same signals, louder
    y = np.array(["bg"] * 8 + ["sz"] * 8)
    clf = make_deep_pipeline("MVPFormer", size="tiny", segment_len=L, amplitude="bands", max_epochs=1,
                             batch_size=8, seed=0, sfreq=100.0).fit(X, y)
    torch.save(clf.to_checkpoint(), tmp_path / "clf.pt")
    back = DeepClassifier.from_checkpoint(torch.load(tmp_path / "clf.pt", weights_only=True))
    assert back.module_.amplitude == "bands"
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    assert np.abs(back.predict_proba(X[:8] * 4) - back.predict_proba(X[:8])).max() > 1e-4
    stream = back.segment_stream(2, 3 * L)  # the live path: one segment at a time
    for t in range(3):
        stream.push(X[9, :, t * L : (t + 1) * L])
    np.testing.assert_allclose(stream.proba(), back.predict_proba(X[9:10])[0], atol=1e-6)

    # bci pretrain's output keeps it, and fine-tuning from it takes it from the checkpoint
    pretrain([w[None] for w in rng.standard_normal((4, 3 * L)).astype(np.float32)],
             {"size": "tiny", "segment_len": L, "amplitude": "bands"}, tmp_path / "pre", steps=1, batch_size=2,
             lr=1e-3, seed=0, progress=False)  # fmt: skip
    assert load_pretraining(tmp_path / "pre").amplitude == "bands"
    tuned = DeepClassifier("MVPFormer", init=str(tmp_path / "pre"), max_epochs=1, batch_size=8, seed=0,
                           sfreq=100.0).fit(X, y)
    assert tuned.module_.amplitude == "bands" and tuned.module_kwargs_["amplitude"] == "bands"
    with pytest.raises(ConfigError, match=r"amplitude='none' \(checkpoint 'bands'\)"):
        DeepClassifier("MVPFormer", module_params={"amplitude": "none"}, init=str(tmp_path / "pre"),
                       sfreq=100.0).fit(X, y)
    # added to a checkpoint without it (as a hub checkpoint): every other weight loaded, the projection fresh
    pretrain([w[None] for w in rng.standard_normal((4, 3 * L)).astype(np.float32)],
             {"size": "tiny", "segment_len": L}, tmp_path / "plain", steps=1, batch_size=2, lr=1e-3, seed=0,
             progress=False)  # fmt: skip
    added = make_deep_pipeline("MVPFormer", amplitude="bands", init=str(tmp_path / "plain"), max_epochs=0,
                               batch_size=8, seed=0, sfreq=100.0).fit(X, y)
    plain = load_pretraining(tmp_path / "plain").state_dict()
    got = added.module_.state_dict()
    assert added.module_.amplitude == "bands" and set(got) - set(plain) == {"patch_embed.amp_proj.weight"}
    assert all(torch.equal(got[k], v) for k, v in plain.items() if not k.startswith("final_layer"))
    with pytest.raises(ConfigError, match="adds a projection the checkpoint lacks; train it with finetune: full"):
        make_deep_pipeline("MVPFormer", amplitude="bands", init=str(tmp_path / "plain"), finetune="freeze",
                           sfreq=100.0).fit(X, y)


def test_pretrain_normalize_global_keeps_amplitude(tmp_path, data_dir):
    import json

    import yaml

    from bci.config import load_config
    from bci.pretraining import pretrain_windows, run_pretrain, validate_pretrain_section

    files = [sorted((data_dir / "seizure/bonn" / s).glob("*.txt"))[0] for s in ("A_Z", "E_S")]
    section = {"recordings": [str(f) for f in files], "sfreq": 100, "window_segments": 4, "hop_segments": 4,
               "max_windows_per_recording": 3, "normalize": "global", "model": {"size": "tiny", "amplitude": "bands"},
               "steps": 1, "batch_size": 2, "device": "cpu"}  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"seed": 0, "pretrain": section}))
    cfg = load_config(tmp_path / "p.yaml")
    data = pretrain_windows(cfg, validate_pretrain_section(cfg))
    assert np.concatenate([w.ravel() for w in data.windows]).std() == pytest.approx(1.0, rel=1e-4)
    raw = pretrain_windows(cfg, {**validate_pretrain_section(cfg), "normalize": "none"})
    for w, v in zip(data.windows, raw.windows):  # one factor for all: the seizure set stays louder
        np.testing.assert_allclose(w, v * data.scale, rtol=1e-5, atol=1e-6)
    assert np.std(data.windows[-1]) > 2 * np.std(data.windows[0])  # E (ictal) vs A
    run_pretrain(cfg, tmp_path / "out", progress=False)
    info = json.loads((tmp_path / "out" / "pretrain.json").read_text())
    assert info["normalize"] == "global" and info["scale"] == pytest.approx(data.scale)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["amplitude"] == "bands"


def test_bench_model_streaming_rows(tmp_path):
    """`bci bench kernels --model`: a hub-layout checkpoint written by braindecode, loaded, streamed vs
    recomputed; the KV cache holds layers x (k, v) x kv heads x context tokens x head dim floats."""
    import json

    from benchmarks.kernels import main

    rows = main(["--model", "tiny", "--channels", "2,3", "--contexts", "3", "--steps", "3", "--full-reps", "1",
                 "--json", str(tmp_path / "rows.json")])  # fmt: skip
    assert json.loads((tmp_path / "rows.json").read_text()) == rows
    for row, C in zip(rows, (2, 3)):
        assert row["C"] == C and row["T"] == 3 and row["segments_timed"] == 3 and row["full_reps"] == 1
        assert 0 < row["segment_p50_ms"] <= row["segment_p99_ms"] and row["full_recompute_p50_ms"] > 0
        assert row["kv_cache_mib"] * 2**20 == 2 * 2 * 2 * (3 * C) * 16 * 4  # tiny: 2 layers, 2 kv heads of dim 16
    (skipped,) = main(["--model", "tiny", "--channels", "2", "--contexts", "3", "--steps", "2", "--max-gib", "0"])
    assert skipped["full_reps"] == 0 and skipped["full_recompute_p50_ms"] is None and "not run" in skipped["note"]
