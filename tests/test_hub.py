"""Published MVPFormer checkpoints (models/hub.py) and fine-tuning them (DeepClassifier(init=...)).

No machine here reaches the Hugging Face Hub: the checkpoints are written by braindecode's
own ``save_pretrained`` (the code ``push_to_hub`` uploads with) with a small config, in
exactly the published layout (config.json, model.safetensors, pytorch_model.bin, README.md),
and read with the network cut off.
"""

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from braindecode.models import MVPFormer as BDMVPFormer

from bci.errors import ConfigError, DataError, ModelError
from models.hub import DEFAULT_USE, describe, load_pretrained, read_card
from models.mvpformer import MVPFormer
from pipelines.deep import DeepClassifier

BONN = Path(__file__).parents[1] / ".." / "shared" / "data" / "seizure" / "bonn"
BONN_SFREQ = 173.61
SEG = 64  # samples per segment of the small checkpoint
ARCH = dict(segment_len=SEG, d_model=32, n_layers=2, n_heads=4, n_head_kv=2, d_inner=64, max_segments=16, max_channels=8)
HUB_ID = "braindecode/mvpformer-s-pretrained"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails (as on a machine without network)."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def write_checkpoint(folder: Path, n_outputs=4, sfreq=BONN_SFREQ, seed=0, segment_len=SEG) -> Path:
    """A hub-layout MVPFormer checkpoint written by braindecode's save_pretrained."""
    torch.manual_seed(seed)
    arch = {**ARCH, "segment_len": segment_len}
    model = BDMVPFormer(n_outputs=n_outputs, n_chans=1, n_times=4 * segment_len, sfreq=sfreq, drop_prob=0.1, **arch)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # larger than the init's std 0.02, so every term shows in the comparison
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("hub") / "mvpformer-tiny")


def bonn(n_files=4, per_file=3, n_times=4 * SEG):
    """Windows ``(n, 1, n_times)`` of Bonn sets A (healthy) and E (seizure), labels."""
    if not BONN.is_dir():
        pytest.skip(f"Bonn data not found at {BONN}")
    X, y = [], []
    for folder, label in (("A_Z", "background"), ("E_S", "seizure")):
        for f in sorted((BONN / folder).glob("*.txt"))[:n_files]:
            sig = np.loadtxt(f)
            for i in range(per_file):
                X.append(sig[None, i * n_times:(i + 1) * n_times])
                y.append(label)
    return np.stack(X), np.array(y)


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_layout_is_the_published_one(checkpoint):
    assert {p.name for p in checkpoint.iterdir()} == {"config.json", "model.safetensors", "pytorch_model.bin", "README.md"}


def test_loads_offline_and_matches_braindecode(checkpoint, no_network):
    ours, info = load_pretrained(str(checkpoint), local_files_only=True)
    theirs = BDMVPFormer.from_pretrained(str(checkpoint)).eval()  # braindecode's model, from the same folder
    assert isinstance(ours, MVPFormer) and not ours.training
    assert info["n_parameters"] == sum(p.numel() for p in theirs.parameters())
    torch.manual_seed(3)
    for shape in [(3, 1, 4 * SEG), (2, 5, 3 * SEG)]:  # the training shape and another montage and length
        x = torch.randn(*shape)
        with torch.no_grad():
            ref_logits, ref_features = theirs(x), theirs(x, return_features=True)
            logits, hidden = ours(x), ours.encode(x)
        assert rel(logits, ref_logits) < 1e-4
        assert rel(hidden[:, -1].mean(1), ref_features["features"]) < 1e-4  # the pooled encoder output
    assert info["kind"] == "directory" and info["architecture"] == "MVPFormer"
    assert info["license"] == "apache-2.0"  # braindecode's card for the MVPFormer class
    assert info["use"] == DEFAULT_USE  # its generated card states no terms: the authors' research-only terms
    assert "not for diagnostic use" in describe(info)


def test_hub_id_from_the_local_cache_offline(checkpoint, tmp_path, no_network):
    # the cache layout `hf download` leaves: models--org--name/{refs/main, snapshots/<commit>/...}
    repo = tmp_path / "cache" / ("models--" + HUB_ID.replace("/", "--"))
    shutil.copytree(checkpoint, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    card = (repo / "snapshots" / COMMIT / "README.md")
    card.write_text(card.read_text() + "\nThis software may only be used for research. In particular, the software "
                    "must not be used for diagnostic purposes.\n")
    model, info = load_pretrained(HUB_ID, cache_dir=tmp_path / "cache", local_files_only=True)
    direct, _ = load_pretrained(str(checkpoint))
    x = torch.randn(2, 3, 2 * SEG)
    with torch.no_grad():
        assert torch.equal(model(x), direct(x))
    assert info["kind"] == "hub" and info["revision"] == COMMIT and info["source"] == HUB_ID
    assert "diagnostic" in info["use"] and "research" in info["use"]
    assert "73.6M" in info["description"]
    assert COMMIT[:12] in describe(info)


def test_read_card():
    card = ("---\nlibrary_name: braindecode\nlicense: other\nlicense_name: research-only\n---\n# Weights\n"
            "Some text. The weights may only be used for research. They must not be used for diagnostic purposes!\n")
    assert read_card(card) == {"license": "research-only", "use": "The weights may only be used for research. "
                                                                  "They must not be used for diagnostic purposes!"}
    assert read_card("no front matter, nothing said") == {}


def test_fine_tunes_one_epoch_on_bonn(checkpoint, tmp_path, no_network):
    X, y = bonn()
    pretrained, _ = load_pretrained(str(checkpoint))
    clf = DeepClassifier("MVPFormer", init=str(checkpoint), sfreq=BONN_SFREQ, max_epochs=1, batch_size=8, seed=0)
    assert clf.get_params()["init"] == str(checkpoint)  # stored unchanged; fit does the work
    clf.fit(X, y)
    module = clf.module_
    assert len(clf.net_.history) == 1
    assert module.final_layer.weight.shape == (2, ARCH["d_model"])  # 4 outputs in the checkpoint, 2 classes here
    assert module.segment_len == SEG and module.codebook_indexing == "reference"
    before, after = pretrained.state_dict(), module.state_dict()
    moved = [k for k in after if k.startswith("blocks.") and not torch.equal(after[k], before[k])]
    assert moved  # the encoder was trained (full fine-tuning) ...
    assert max(rel(after[k], before[k]) for k in moved) < 0.5  # ... starting from the checkpoint
    assert clf.predict_proba(X).shape == (len(X), 2)
    prov = clf.provenance_
    assert prov["source"] == str(checkpoint) and prov["license"] == "apache-2.0"
    assert prov["head"] == "re-initialised" and prov["finetune"] == "full"
    # the saved form keeps weights and provenance, and needs neither the checkpoint nor the network
    saved = tmp_path / "clf.pt"
    torch.save(clf.to_checkpoint(), saved)
    back = DeepClassifier.from_checkpoint(torch.load(saved, weights_only=True))
    np.testing.assert_allclose(back.predict_proba(X), clf.predict_proba(X), rtol=1e-5, atol=1e-6)
    assert back.provenance_ == prov


@pytest.mark.parametrize("finetune", ["freeze", "linear_probe", "lora"])
def test_frozen_encoder_modes(checkpoint, finetune):
    X, y = bonn(n_files=2)
    pretrained, _ = load_pretrained(str(checkpoint))
    clf = DeepClassifier("MVPFormer", init=str(checkpoint), finetune=finetune, sfreq=BONN_SFREQ,
                         max_epochs=1, batch_size=4, seed=0, lr=1e-2).fit(X, y)
    before, after = pretrained.state_dict(), clf.module_.state_dict()
    assert set(after) == set(before)  # lora: adapters merged, a plain MVPFormer again
    encoder = [k for k in after if not k.startswith(("final_layer.", "pretrain_head."))]
    changed = [k for k in encoder if not torch.equal(after[k], before[k])]
    if finetune == "lora":
        assert changed and all(k.rsplit(".", 2)[-2] in {"q_attn", "c_attn", "c_proj", "gate_proj", "up_proj", "down_proj"}
                               for k in changed)  # fmt: skip
    else:
        assert not changed  # the encoder kept the checkpoint's weights exactly
        trainable = {k for k, p in clf.module_.named_parameters() if p.requires_grad}
        assert trainable == {"final_layer.weight"}
    assert clf.module_.drop.p == (0.0 if finetune == "linear_probe" else 0.1)
    assert clf.provenance_["finetune"] == finetune


def test_head_kept_when_classes_match(tmp_path):
    folder = write_checkpoint(tmp_path / "two", n_outputs=2)
    X, y = bonn(n_files=2)
    pretrained, _ = load_pretrained(str(folder))
    clf = DeepClassifier("MVPFormer", init=str(folder), finetune="freeze", sfreq=BONN_SFREQ, max_epochs=1, lr=0.0,
                         seed=0).fit(X, y)
    assert clf.provenance_["head"] == "kept"
    assert torch.equal(clf.module_.final_layer.weight, pretrained.final_layer.weight)


def test_one_line_errors(checkpoint, tmp_path, no_network):
    def one_line(exc_type, *args, **kwargs):
        with pytest.raises(exc_type) as err:
            load_pretrained(*args, **kwargs)
        assert "\n" not in str(err.value)
        return str(err.value)

    assert "no checkpoint folder" in one_line(DataError, str(tmp_path / "missing"))
    corrupt = shutil.copytree(checkpoint, tmp_path / "corrupt")
    (corrupt / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes()[:200])
    assert "corrupt model.safetensors" in one_line(DataError, str(corrupt))
    (corrupt / "model.safetensors").unlink()
    assert "no model.safetensors" in one_line(DataError, str(corrupt))
    from braindecode.models import EEGNet

    EEGNet(n_outputs=2, n_chans=4, n_times=256, sfreq=100).save_pretrained(tmp_path / "eegnet")
    assert "not an MVPFormer checkpoint" in one_line(ModelError, str(tmp_path / "eegnet"))
    other = shutil.copytree(checkpoint, tmp_path / "other")  # config says d_model 48, the weights are 32 wide
    (other / "config.json").write_text((other / "config.json").read_text().replace('"d_model": 32', '"d_model": 48'))
    assert "do not fit" in one_line(ModelError, str(other))
    message = one_line(ModelError, "braindecode/not-downloaded", cache_dir=tmp_path / "empty", local_files_only=True)
    assert "hf download braindecode/not-downloaded" in message


def test_init_config_errors(checkpoint, tmp_path):
    X, y = bonn(n_files=1, per_file=2)
    with pytest.raises(ConfigError, match="checkpoint was trained at 100 Hz"):
        DeepClassifier("MVPFormer", init=str(write_checkpoint(tmp_path / "hz", sfreq=100)), sfreq=BONN_SFREQ).fit(X, y)
    with pytest.raises(ConfigError, match="d_model=64"):
        DeepClassifier("MVPFormer", module_params={"d_model": 64}, init=str(checkpoint), sfreq=BONN_SFREQ).fit(X, y)
    with pytest.raises(ConfigError, match="supported for MVPFormer"):
        DeepClassifier("EEGNet", init=str(checkpoint), sfreq=BONN_SFREQ).fit(X, y)
    with pytest.raises(ConfigError, match="finetune"):
        DeepClassifier("MVPFormer", finetune="freeze", sfreq=BONN_SFREQ).fit(X, y)
    with pytest.raises(ConfigError, match="finetune"):
        DeepClassifier("MVPFormer", init=str(checkpoint), finetune="adapter", sfreq=BONN_SFREQ).fit(X, y)


def test_bci_train_then_predict_carry_the_licence(tmp_path, capsys):
    """``init:`` in a pipeline YAML through ``bci train``; the saved metadata and ``bci predict`` name the terms."""
    import yaml

    from bci.cli import main
    from bci.model import TrainedModel

    if not BONN.is_dir():
        pytest.skip(f"Bonn data not found at {BONN}")
    import mne
    from scipy.signal import resample

    ckpt = write_checkpoint(tmp_path / "ckpt", n_outputs=2, sfreq=100.0, segment_len=100)  # 4-s windows: 4 segments
    data = tmp_path / "bonn"
    for sub in ("A_Z", "E_S"):
        (data / sub).mkdir(parents=True)
        for f in sorted((BONN / sub).glob("*.txt"))[:3]:
            shutil.copy(f, data / sub / f.name)
    pipeline = {"name": "MVPFormer-pretrained", "paradigms": ["Seizure"], "pipeline": [{
        "name": "make_deep_pipeline", "from": "pipelines.deep",
        "parameters": {"name": "MVPFormer", "init": str(ckpt), "finetune": "freeze",
                       "channel_mode": "independent", "max_epochs": 1, "batch_size": 16}}]}
    (tmp_path / "pipeline.yml").write_text(yaml.safe_dump(pipeline))
    config = {"name": "pretrained MVPFormer", "seed": 0, "preprocessing": {"bandpass": [0.5, 40], "resample": 100},
              "train": {"task": "seizure", "pipeline": str(tmp_path / "pipeline.yml"), "recordings": [str(data)],
                        "labels": "A-E", "window": {"sfreq": 100, "length_s": 4.0, "hop_s": 2.0, "settle_s": 3.0, "segment_s": 1.0},
                        "hop": 1.0}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "train.yaml"), "--out", str(tmp_path / "model"), "--no-progress"]) == 0
    meta = TrainedModel.load(tmp_path / "model").metadata["pretrained"]
    assert meta["source"] == str(ckpt) and meta["license"] == "apache-2.0" and meta["finetune"] == "freeze"
    capsys.readouterr()
    ictal = np.loadtxt(sorted(data.glob("E_S/*.txt"))[0]) * 1e-6  # a Bonn segment as a 1-channel EDF at 200 Hz
    raw = mne.io.RawArray(resample(ictal, int(len(ictal) * 200 / BONN_SFREQ))[None], mne.create_info(["EEG"], 200.0, "eeg"),
                          verbose="error")
    mne.export.export_raw(tmp_path / "ictal.edf", raw, fmt="edf", verbose="error")
    assert main(["predict", str(tmp_path / "model"), str(tmp_path / "ictal.edf")]) == 0
    out = capsys.readouterr().out
    assert f"fine-tuned from pretrained weights {ckpt} (licence: apache-2.0; research use only, not for diagnostic use" in out


def test_init_from_our_own_bci_pretrain_output(tmp_path):
    """Where no hub weights are present, init names the folder `bci pretrain` wrote
    (config.json + model.pt): loaded by models.pretrain, recorded as this project's own."""
    import json

    from models.pretrain import CONFIG, WEIGHTS

    torch.manual_seed(0)
    own = MVPFormer(n_outputs=2, **ARCH)
    folder = tmp_path / "pretrained"
    folder.mkdir()
    (folder / CONFIG).write_text(json.dumps({**ARCH, "n_outputs": 2}))
    torch.save(own.state_dict(), folder / WEIGHTS)
    model, info = load_pretrained(str(folder))
    assert info["kind"] == "bci pretrain" and "bci pretrain" in info["license"]
    for key, value in own.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    X, y = bonn(n_files=2)
    clf = DeepClassifier("MVPFormer", init=str(folder), sfreq=BONN_SFREQ, max_epochs=1, batch_size=4, seed=0).fit(X, y)
    assert clf.provenance_["kind"] == "bci pretrain" and clf.predict_proba(X).shape == (len(X), 2)


# ---------------------------------------------------------------- train.init: hub, else our own pretraining
WINDOW = {"sfreq": 100, "length_s": 4.0, "hop_s": 2.0, "settle_s": 3.0, "segment_s": 1.0}


@pytest.fixture
def seizure_setup(tmp_path, monkeypatch):
    """Bonn A/E segments, a small `bci pretrain` config on them (3 steps), a frozen-encoder MVPFormer
    seizure pipeline and a train config whose init names the hub id, that config and a cache; the
    Hugging Face cache is an empty folder (no hub weights present)."""
    import huggingface_hub.constants
    import yaml

    if not BONN.is_dir():
        pytest.skip(f"Bonn data not found at {BONN}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    data = tmp_path / "bonn"
    for sub in ("A_Z", "E_S"):
        (data / sub).mkdir(parents=True)
        for f in sorted((BONN / sub).glob("*.txt"))[:2]:
            shutil.copy(f, data / sub / f.name)
    pretrain = {"name": "small pretraining", "seed": 0, "pretrain": {
        "recordings": [str(data / "*" / "*.txt")], "preprocessing": {"bandpass": [0.5, 40]}, "sfreq": 100,
        "segment_seconds": 1.0, "window_segments": 4, "hop_segments": 2, "max_windows_per_recording": 4,
        "normalize": "global", "model": {"size": "tiny", "drop_prob": 0.0, "amplitude": "bands"},
        "steps": 3, "batch_size": 4, "checkpoint_every": 3}}
    (tmp_path / "pretrain.yaml").write_text(yaml.safe_dump(pretrain))
    pipeline = {"name": "MVPFormer", "paradigms": ["Seizure"], "pipeline": [{
        "name": "make_deep_pipeline", "from": "pipelines.deep",
        "parameters": {"name": "MVPFormer", "size": "tiny", "segment_len": 100, "channel_mode": "independent",
                       "amplitude": "bands", "finetune": "freeze", "max_epochs": 1, "batch_size": 16}}]}
    (tmp_path / "pipeline.yml").write_text(yaml.safe_dump(pipeline))
    config = {"name": "seizure MVPFormer from pretrained weights", "seed": 0,
              "preprocessing": {"bandpass": [0.5, 40], "resample": 100},
              "train": {"task": "seizure", "pipeline": str(tmp_path / "pipeline.yml"), "recordings": [str(data)],
                        "labels": "A-E", "window": WINDOW, "hop": 1.0,
                        "init": {"hub": HUB_ID, "pretrain": "pretrain.yaml", "cache": str(tmp_path / "cache")}}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    return tmp_path, config


def test_train_init_falls_back_to_our_own_pretraining_once(seizure_setup, capsys, monkeypatch, no_network):
    """No hub weights present: `bci train` pretrains into the cache, fine-tunes from those weights and
    says so; the second run reuses the pretraining without running it again."""
    import json

    import bci.pretraining
    from bci.cli import main
    from bci.model import TrainedModel
    from models.pretrain import SUMMARY, WEIGHTS

    root, _ = seizure_setup
    assert main(["train", str(root / "train.yaml"), "--out", str(root / "model"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    (folder,) = (root / "cache").iterdir()  # the run, named after the config
    assert folder.name.startswith("pretrain-") and json.loads((folder / SUMMARY).read_text())["steps"] == 3
    meta = TrainedModel.load(root / "model").metadata["pretrained"]
    assert meta["kind"] == "bci pretrain" and meta["source"] == str(folder)
    assert meta["pretrain"]["steps"] == 3 and meta["pretrain"]["recordings"] == 4 and meta["pretrain"]["normalize"] == "global"
    assert meta["init"]["used"] == "pretrain" and meta["init"]["pretrained_now"] is True
    assert HUB_ID in meta["init"]["skipped"][0] and "not in the local cache" in meta["init"]["skipped"][0]
    assert f"fine-tuned from pretrained weights {folder} (own bci pretrain of pretrain.yaml: 3 steps" in out
    assert f"; not used: {HUB_ID} is not in the local cache" in out
    # the fine-tune started from the pretrained weights: with a frozen encoder, every tensor but the head's is theirs
    pretrained = torch.load(folder / WEIGHTS, weights_only=True)
    tuned = TrainedModel.load(root / "model").estimator.module_.state_dict()  # the DeepClassifier
    assert any(k.startswith("patch_embed.") for k in pretrained)
    for key, value in pretrained.items():
        if not key.startswith("final_layer."):
            assert torch.equal(tuned[key], value), key
    # a second run reuses the finished pretraining
    stamp = (folder / WEIGHTS).stat().st_mtime_ns

    def refuse(*args, **kwargs):
        raise AssertionError("pretraining ran again")

    monkeypatch.setattr(bci.pretraining, "run_pretrain", refuse)
    assert main(["train", str(root / "train.yaml"), "--out", str(root / "again"), "--no-progress"]) == 0
    again = TrainedModel.load(root / "again").metadata["pretrained"]
    assert again["source"] == str(folder) and again["init"]["pretrained_now"] is False
    assert (folder / WEIGHTS).stat().st_mtime_ns == stamp and len(list((root / "cache").iterdir())) == 1


def test_train_init_takes_the_hub_checkpoint_when_cached_and_fitting(seizure_setup, no_network):
    """The hub checkpoint in the local cache is used when it fits the data; at another rate it is
    skipped with the reason, and the (here already finished) own pretraining is used."""
    import huggingface_hub.constants

    from bci.config import load_config
    from bci.pretraining import pretraining_folder, resolve_init, validate_init
    from models.pretrain import SUMMARY, WEIGHTS

    root, config = seizure_setup
    clf = DeepClassifier("MVPFormer", module_params={"segment_len": 100, "amplitude": "bands"})
    cfg = load_config(root / "train.yaml")
    spec = validate_init(cfg, config["train"]["init"])

    def check(model, source):
        clf.check_pretrained(model, 100.0, source)

    for rate in (100.0, BONN_SFREQ):
        repo = Path(huggingface_hub.constants.HF_HUB_CACHE) / ("models--" + HUB_ID.replace("/", "--"))
        shutil.rmtree(repo, ignore_errors=True)
        write_checkpoint(repo / "snapshots" / COMMIT, n_outputs=2, sfreq=rate, segment_len=100)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(COMMIT)
        if rate == 100.0:
            assert resolve_init(spec, sfreq=100.0, check=check) == (HUB_ID, {
                "hub": HUB_ID, "pretrain_config": str(root / "pretrain.yaml"), "used": "hub", "skipped": []})
            assert not (root / "cache").exists()  # nothing pretrained
            continue
        folder = pretraining_folder(spec["pretrain"], spec["cache"])
        folder.mkdir(parents=True)  # a finished run (its files), so nothing is pretrained here
        torch.save({}, folder / WEIGHTS)
        (folder / SUMMARY).write_text("{}")
        source, record = resolve_init(spec, sfreq=100.0, check=check)
        assert source == str(folder) and record["used"] == "pretrain" and record["pretrained_now"] is False
        assert "trained at 173.61 Hz, the data are at 100 Hz" in record["skipped"][0]


def test_pretraining_cache_follows_the_recordings(seizure_setup):
    """The cached pretraining is reused for the same config and data, and redone when a recording
    it reads changes or its glob matches another file."""
    import os

    from bci.pretraining import pretraining_folder

    root, _ = seizure_setup
    config, cache = root / "pretrain.yaml", root / "cache"
    first = pretraining_folder(config, cache)
    assert pretraining_folder(config, cache) == first
    segment = sorted((root / "bonn" / "A_Z").glob("*.txt"))[0]
    stat = segment.stat()
    os.utime(segment, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file was rewritten
    touched = pretraining_folder(config, cache)
    shutil.copy(segment, segment.with_name("Z999.txt"))  # one more recording
    added = pretraining_folder(config, cache)
    assert len({first, touched, added}) == 3 and all(p.parent == cache for p in (touched, added))


def test_train_init_errors_are_one_line(seizure_setup, capsys):
    import yaml

    from bci.cli import main
    from bci.training import train

    root, config = seizure_setup
    (root / "bad_pretrain.yaml").write_text(yaml.safe_dump({"pretrain": {"recordings": ["x.txt"]}}))
    (root / "bp.yml").write_text(yaml.safe_dump({"name": "BP+LR", "paradigms": ["Seizure"], "pipeline": [
        {"name": "make_seizure_pipeline", "from": "pipelines.seizure", "parameters": {"name": "BP+LR"}}]}))
    cases = [
        ({"init": HUB_ID}, "train.init: expected a mapping"),
        ({"init": {}}, "train.init: names no weights"),
        ({"init": {"hub": HUB_ID, "fallback": "x"}}, "train.init.fallback: unknown key"),
        ({"init": {"hub": "not a hub id"}}, "train.init.hub: 'not a hub id' is neither a checkpoint folder nor a hub id"),
        ({"init": {"pretrain": "missing.yaml"}}, "train.init.pretrain: no bci pretrain config at"),
        ({"init": {"pretrain": "bad_pretrain.yaml"}}, "pretrain.sfreq: missing"),
        ({"init": {"hub": HUB_ID}, "pipeline": str(root / "bp.yml")}, "has no network(s) that start from pretrained weights"),
        ({"init": {"hub": HUB_ID, "pretrain": "pretrain.yaml"}, "preprocessing": {"resample": 128}},
         "pretrain.yaml pretrains at 100 Hz, the training data are at 128 Hz"),
    ]
    for i, (change, message) in enumerate(cases):
        case = {**config, "train": {**config["train"], **{k: v for k, v in change.items() if k != "preprocessing"}}}
        if "preprocessing" in change:
            case["preprocessing"] = {**config["preprocessing"], **change["preprocessing"]}
            case["train"]["window"] = {**WINDOW, "sfreq": 128}
        path = root / f"case{i}.yaml"
        path.write_text(yaml.safe_dump(case))
        with pytest.raises(ConfigError) as err:
            train(path, root / f"m{i}", progress=False)
        assert message in str(err.value) and "\n" not in str(err.value), (message, str(err.value))
    assert main(["train", str(root / "case0.yaml"), "--out", str(root / "m")]) != 0
    assert capsys.readouterr().err.strip().count("\n") == 0
