"""Hostile and broken inputs (issue 18): no code runs from a model or a config, no traceback,
no silent truncation. Each refusal is exit code 2 with exactly one ``error:`` line.

The probes of the issue come first, one test each; then hypothesis fuzzes recordings,
configs, pipeline files and model folders through the command line, in process.
"""

import io
import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import skops
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyriemann.estimation import Covariances
from pyriemann.tangentspace import TangentSpace
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from bci.channels import ChannelSet
from bci.cli import main
from bci.config import TOP_KEYS
from bci.errors import DataError
from bci.io import load_recording
from bci.model import TrainedModel

from conftest import EEGBCI

CHANNELS = ["FC3", "FCz", "FC4", "C5", "C3", "C1", "Cz", "C2", "C4", "C6", "CPz"]
SFREQ = 160.0
#: Examples per fuzz test; BCI_FUZZ_EXAMPLES=500 for a deeper run.
FUZZ = settings(max_examples=int(os.environ.get("BCI_FUZZ_EXAMPLES", 25)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# --- helpers ------------------------------------------------------------------------
def run(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, *words: str) -> None:
    """Exit 2, exactly one ``error:`` line, no traceback, and the line says ``words``."""
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err)
    for word in words:
        assert word in lines[0], lines[0]


def write_fif(path: Path, data: np.ndarray, sfreq: float = SFREQ, names=None) -> Path:
    import mne

    names = names or CHANNELS[: data.shape[0]]
    mne.io.RawArray(data, mne.create_info(names, sfreq, "eeg"), verbose="error").save(path, overwrite=True, verbose="error")
    return path


def skops_file(schema: dict) -> bytes:
    """A skops archive holding ``schema`` (what a hand-made, hostile file looks like)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("schema.json", json.dumps({**schema, "protocol": 2, "_skops_version": skops.__version__}))
    return buf.getvalue()


def call_node(module: str, name: str, arg: str) -> dict:
    """skops' "construct from reduce" node: loading it calls ``module.name(arg)``."""
    text = {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode", "content": json.dumps(arg), "is_json": True, "__id__": 2}
    args = {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode", "content": [text], "__id__": 1}
    return {"__class__": name, "__module__": module, "__loader__": "ConstructorFromReduceNode", "content": args, "__id__": 0}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A small saved TS+LR model on 11 channels at 160 Hz, 2 s windows (synthetic fit)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, len(CHANNELS), 320)) * 1e-5
    y = np.array(["left", "right"] * 20)
    X[y == "right", 4] *= 3
    estimator = make_pipeline(Covariances("oas"), TangentSpace(), LogisticRegression()).fit(X, y)
    model = TrainedModel(
        name="tiny", estimator=estimator, classes=["left", "right"], input_channels=ChannelSet(CHANNELS),
        sfreq=SFREQ, window_s=2.0, hop_s=1.0, preprocessing={"bandpass": [8, 30]},
    )  # fmt: skip
    return model.save(tmp_path_factory.mktemp("hostile") / "model")


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    return write_fif(tmp_path_factory.mktemp("rec") / "good_raw.fif", rng.standard_normal((len(CHANNELS), 1600)) * 2e-5)


def copy_model(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def deep_meta(model_dir: Path, dst: Path) -> Path:
    """A model folder that says it holds a bare network (its weights.pt is what the test writes)."""
    dst.mkdir(parents=True, exist_ok=True)
    meta = json.loads((model_dir / "model.json").read_text())
    (dst / "model.json").write_text(json.dumps({**meta, "deep_steps": [""]}))
    return dst


# --- the probes of the issue ---------------------------------------------------------
def test_skops_payload_calling_exec_is_refused(model_dir, recording, tmp_path, capsys):
    sentinel = tmp_path / "pwned"
    folder = copy_model(model_dir, tmp_path / "evil")
    (folder / "estimator.skops").write_bytes(skops_file(call_node("builtins", "exec", f"open({str(sentinel)!r}, 'w')")))
    code, err = run(capsys, "predict", folder, recording)
    assert_refused(code, err, "refusing to load type builtins.exec")
    assert not sentinel.exists()


def test_trusted_model_types_are_exact_classes():
    import importlib

    from bci.model import TRUSTED_TYPES

    for dotted in TRUSTED_TYPES:
        module, _, name = dotted.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), name), type), dotted


def test_pipeline_step_naming_a_function_is_refused(recording, tmp_path, capsys):
    sentinel = tmp_path / "pwned"
    spec = {"name": "evil", "paradigms": ["LeftRightImagery"], "pipeline": [
        {"name": "run_subprocess", "from": "mne.utils", "parameters": {"command": ["touch", str(sentinel)]}}]}  # fmt: skip
    (tmp_path / "evil.yml").write_text(yaml.safe_dump(spec))
    cfg = {"train": {"pipeline": str(tmp_path / "evil.yml"), "recordings": [str(recording)], "tmax": 2.0}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    code, err = run(capsys, "train", tmp_path / "train.yaml", "--out", tmp_path / "m")
    assert_refused(code, err, "pipeline[0]", "mne.utils.run_subprocess is not allowed")
    assert not sentinel.exists()


def test_pipeline_step_naming_a_cache_folder_is_refused(tmp_path):
    # Pipeline(memory=PATH) is an allowed class, but it would write a joblib cache wherever the file says
    from bci.errors import ConfigError
    from pipelines.registry import read_pipeline_file

    spec = {"name": "cache", "paradigms": ["LeftRightImagery"], "pipeline": [
        {"name": "Pipeline", "from": "sklearn.pipeline", "parameters": {"steps": [], "memory": str(tmp_path / "x")}}]}  # fmt: skip
    (tmp_path / "cache.yml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"parameters\.memory: a pipeline file may not name a folder"):
        read_pipeline_file(tmp_path / "cache.yml")
    assert not (tmp_path / "x").exists()


def test_every_shipped_pipeline_resolves_and_builds():
    from pipelines.registry import PIPELINE_DIR, build_pipeline, read_pipeline_file

    for path in sorted(PIPELINE_DIR.glob("*.yml")):
        assert hasattr(build_pipeline(read_pipeline_file(path), path), "fit"), path


def test_yaml_bomb_is_refused_before_use(tmp_path, capsys):
    from bci.config import load_config
    from bci.errors import ConfigError

    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("description:\n  " + "\n  ".join(lines) + "\n")
    with pytest.raises(ConfigError, match="anchors and aliases"):
        load_config(bomb)
    code, err = run(capsys, "evaluate", bomb, "--out", tmp_path / "out", "--no-progress")
    assert_refused(code, err, "bomb.yaml", "line 2")


def test_free_text_fields_must_be_strings(tmp_path):
    from bci.config import load_config
    from bci.errors import ConfigError

    (tmp_path / "c.yaml").write_text("description: {a: [1, 2]}\n")
    with pytest.raises(ConfigError, match="description: expected a string"):
        load_config(tmp_path / "c.yaml")


def test_truncated_edf_refused_by_info_and_predict(model_dir, data_dir, tmp_path, capsys):
    data = (EEGBCI / "S001" / "S001R04.edf").read_bytes()
    cut = tmp_path / "cut.edf"
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert_refused(*run(capsys, "info", cut), "file truncated", "125 records")
    assert_refused(*run(capsys, "predict", model_dir, cut), "file truncated")


def test_truncated_fif_reported_as_truncated(recording, tmp_path):
    data = recording.read_bytes()
    (tmp_path / "cut_raw.fif").write_bytes(data[: len(data) * 3 // 4])
    with pytest.raises(DataError, match="truncated or corrupt file"):
        load_recording(tmp_path / "cut_raw.fif")


def test_all_flat_recording_refused_by_predict(model_dir, tmp_path, capsys):
    flat = write_fif(tmp_path / "flat_raw.fif", np.zeros((len(CHANNELS), 1600)))
    assert_refused(*run(capsys, "predict", model_dir, flat), "no signal", "flat")
    assert run(capsys, "info", flat)[0] == 0  # info describes it (and flags every channel)


def test_nan_samples_refused_by_predict(model_dir, tmp_path, capsys):
    data = np.random.default_rng(2).standard_normal((len(CHANNELS), 1600)) * 2e-5
    data[3, 100:200] = np.nan
    rec = write_fif(tmp_path / "nan_raw.fif", data)
    assert_refused(*run(capsys, "predict", model_dir, rec), "NaN", "C5")


def test_weights_with_wrong_keys_refused(model_dir, recording, tmp_path, capsys):
    folder = deep_meta(model_dir, tmp_path / "deep")
    torch.save({"conv.weight": torch.zeros(2, 3), "conv.bias": torch.zeros(2)}, folder / "weights.pt")
    assert_refused(*run(capsys, "predict", folder, recording), "expected checkpoints of the deep steps")
    torch.save({"": {"state_dict": {"w": torch.zeros(1)}}}, folder / "weights.pt")
    assert_refused(*run(capsys, "predict", folder, recording), "not a valid DeepClassifier checkpoint")


def test_weights_with_python_objects_refused_in_one_line(model_dir, recording, tmp_path, capsys):
    from fractions import Fraction

    folder = deep_meta(model_dir, tmp_path / "deep")
    torch.save({"": Fraction(1, 3)}, folder / "weights.pt")
    code, err = run(capsys, "predict", folder, recording)
    assert_refused(code, err, "fractions.Fraction", "only tensors and plain values")
    assert "weights_only" not in err and len(err.strip().splitlines()) == 1


def test_missing_channels_interpolation_is_logged(model_dir, tmp_path, capsys, caplog):
    rng = np.random.default_rng(3)
    present = CHANNELS[3:]  # FC3, FCz, FC4 missing: interpolated from the other 8
    rec = write_fif(tmp_path / "part_raw.fif", rng.standard_normal((len(present), 1600)) * 2e-5, names=present)
    with caplog.at_level(logging.WARNING):
        assert run(capsys, "predict", model_dir, rec)[0] == 0
    assert "interpolated 3 (FC3, FCz, FC4)" in caplog.text


def test_wrong_sampling_rate_says_expected_and_found(model_dir, tmp_path, capsys):
    rec = write_fif(tmp_path / "fast_raw.fif", np.random.default_rng(4).standard_normal((len(CHANNELS), 2500)) * 2e-5, sfreq=250.0)
    assert_refused(*run(capsys, "predict", model_dir, rec), "expected a sampling rate of 160 Hz, found 250 Hz")


# --- fuzz: recordings --------------------------------------------------------------------
@pytest.fixture(scope="module")
def edf_bytes(data_dir) -> bytes:
    return (EEGBCI / "S001" / "S001R04.edf").read_bytes()


@FUZZ
@given(fraction=st.floats(0.0, 0.9999))
def test_fuzz_truncated_edf_always_refused(edf_bytes, tmp_path, capsys, fraction):
    path = tmp_path / "cut.edf"
    path.write_bytes(edf_bytes[: int(len(edf_bytes) * fraction)])
    assert_refused(*run(capsys, "info", path))


@FUZZ
@given(data=st.binary(max_size=3000), suffix=st.sampled_from([".edf", ".bdf", ".gdf", ".fif", ".set", ".vhdr", ".txt", ".inp"]))
def test_fuzz_random_bytes_refused(tmp_path, capsys, data, suffix):
    path = tmp_path / f"Z{suffix}"
    path.write_bytes(data)
    assert_refused(*run(capsys, "info", path))


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 256 + 64 * 256 - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_fuzz_corrupted_edf_header_read_or_refused_cleanly(edf_bytes, tmp_path, capsys, edits):
    data = bytearray(edf_bytes)
    for pos, value in edits:
        data[pos] = value
    path = tmp_path / "bent.edf"
    path.write_bytes(bytes(data))
    code, err = run(capsys, "info", path)
    if code != 0:
        assert_refused(code, err)


# --- fuzz: configs and pipeline files ------------------------------------------------------
SCALARS = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=12)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=25)
CONFIGS = VALUES | st.dictionaries(st.sampled_from(sorted(TOP_KEYS)) | st.text(max_size=8), VALUES, max_size=6)


def bomb_text(depth: int, width: int, key: str) -> str:
    lines = [f"{key}:", f"  a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, depth)]
    return "\n".join(lines) + "\n"


def files_outside(root: Path, allowed: set) -> set:
    return {p for p in root.rglob("*") if not any(p == a or a in p.parents for a in allowed)}


@FUZZ
@given(doc=CONFIGS.map(yaml.safe_dump) | st.text(max_size=200) | st.builds(bomb_text, st.integers(2, 12), st.integers(2, 12), st.sampled_from(["description", "name", "datasets"])))
def test_fuzz_configs_refused(tmp_path_factory, capsys, doc):
    root = tmp_path_factory.mktemp("cfg")
    cfg = root / "c.yaml"
    cfg.write_text(doc)
    assert_refused(*run(capsys, "evaluate", cfg, "--out", root / "out", "--no-progress"))
    assert files_outside(root, {cfg, root / "out"}) == set()


HOSTILE_STEPS = [
    ("mne.utils", "run_subprocess"), ("os", "system"), ("subprocess", "run"), ("builtins", "exec"), ("builtins", "eval"),
    ("sklearn.utils", "estimator_checks"), ("sklearn.datasets", "fetch_openml"), ("moabb.utils", "set_download_dir"),
    ("pyriemann.utils.mean", "mean_riemann"), ("pipelines.registry", "load_pipelines"), ("pipelines.riemann", "__builtins__"),
    ("models.pretrain", "pretrain"), ("braindecode.util", "set_random_seeds"), ("sklearn", "__class__"), ("pipelines.deep", "torch"),
]  # fmt: skip


@FUZZ
@given(
    hostile=st.sampled_from(HOSTILE_STEPS), position=st.integers(0, 2),
    params=st.dictionaries(st.sampled_from(["command", "path", "x", "name"]), VALUES, max_size=3),
)  # fmt: skip
def test_fuzz_pipeline_files_with_hostile_steps_refused(tmp_path_factory, recording, capsys, hostile, position, params):
    root = tmp_path_factory.mktemp("pipe")
    steps = [{"name": "Covariances", "from": "pyriemann.estimation"}, {"name": "TangentSpace", "from": "pyriemann.tangentspace"}]
    steps.insert(position, {"name": hostile[1], "from": hostile[0], "parameters": params})
    (root / "p.yml").write_text(yaml.safe_dump({"name": "p", "paradigms": ["LeftRightImagery"], "pipeline": steps}))
    (root / "t.yaml").write_text(yaml.safe_dump({"train": {"pipeline": str(root / "p.yml"), "recordings": [str(recording)], "tmax": 2.0}}))
    assert_refused(*run(capsys, "train", root / "t.yaml", "--out", root / "m"), f"pipeline[{position}]", f"{hostile[0]}.{hostile[1]}")
    assert files_outside(root, {root / "p.yml", root / "t.yaml"}) == set()


# --- fuzz: model folders ------------------------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=10)  # fmt: skip
HOSTILE_CALLS = [("builtins", "exec"), ("builtins", "eval"), ("os", "system"), ("subprocess", "getoutput"), ("builtins", "open"),
                 ("numpy", "load"), ("sklearn.utils", "_print_elapsed_time"), ("pipelines.registry", "load_pipelines")]  # fmt: skip


def garble_skops(valid: bytes, kind: str, n: int, call: tuple, sentinel: Path) -> bytes:
    if kind == "bytes":
        return bytes((n * 7 + i * 31) % 256 for i in range(n % 500))
    if kind == "cut":
        return valid[: n % len(valid)]
    schema = json.loads(zipfile.ZipFile(io.BytesIO(valid)).read("schema.json"))
    payload = call_node(call[0], call[1], f"open({str(sentinel)!r}, 'w')")
    if kind == "root":
        return skops_file(payload)
    # nest the payload inside the pipeline's first step (an attribute of a trusted object)
    first = schema["content"]["content"]["steps"]["content"][0]["content"][1]
    first.setdefault("content", {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode", "content": {}, "__id__": 9})
    first["content"]["content"]["hook"] = payload
    return skops_file(schema)


@FUZZ
@given(
    part=st.sampled_from(["model.json", "estimator.skops", "weights.pt"]),
    kind=st.sampled_from(["bytes", "cut", "root", "nested"]), n=st.integers(0, 10**6),
    call=st.sampled_from(HOSTILE_CALLS), doc=JSON,
    keys=st.lists(st.text(max_size=10), max_size=4),
)  # fmt: skip
def test_fuzz_model_folders_refused(model_dir, recording, tmp_path_factory, capsys, part, kind, n, call, doc, keys):
    root = tmp_path_factory.mktemp("model")
    folder = copy_model(model_dir, root / "m")
    sentinel = root / "pwned"
    if part == "model.json":  # a random JSON document, or random bytes
        (folder / "model.json").write_text(json.dumps(doc)) if kind in ("root", "nested") else (folder / "model.json").write_bytes(garble_skops(b"x", "bytes", n, call, sentinel))
    elif part == "estimator.skops":
        (folder / "estimator.skops").write_bytes(garble_skops((model_dir / "estimator.skops").read_bytes(), kind, n, call, sentinel))
    else:  # a network's checkpoint with tensors under the wrong keys, or random bytes
        deep_meta(model_dir, folder)
        if kind == "bytes":
            (folder / "weights.pt").write_bytes(garble_skops(b"x", "bytes", n, call, sentinel))
        else:
            torch.save({"": {k: torch.zeros(n % 5) for k in keys}} if kind == "nested" else {k: torch.zeros(2) for k in keys}, folder / "weights.pt")
    assert_refused(*run(capsys, "predict", folder, recording, "--json", root / "p.json"))
    assert not sentinel.exists()
    assert files_outside(root, {folder}) == set()


@FUZZ
@given(key=st.sampled_from(["name", "task", "classes", "input_channels", "sfreq", "window_s", "hop_s", "preprocessing", "deep_steps", "metadata", "format_version"]), value=JSON)
def test_fuzz_model_metadata_values_read_or_refused_cleanly(model_dir, recording, tmp_path_factory, capsys, key, value):
    folder = copy_model(model_dir, tmp_path_factory.mktemp("meta") / "m")
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, key: value}))
    code, err = run(capsys, "predict", folder, recording)
    if code != 0:
        assert_refused(code, err)
