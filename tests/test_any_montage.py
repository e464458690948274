"""Channel contracts: one saved seizure model on 1-channel EEG, 10-20 scalp and 84-contact ECoG.

The models are trained by the project's own seizure configs, unchanged; the test
recordings are EDF files written with ``mne.export.export_raw`` from real Bonn segments
(background: sets Z and N; ictal: set S), resampled to the recording's rate.
"""

import json
import os
from pathlib import Path

import mne
import numpy as np
import pytest
from scipy.signal import resample

from bci.channels import ChannelContract, ChannelSet
from bci.cli import main
from bci.errors import DataError, ModelError
from bci.io import load_recording
from bci.model import TrainedModel

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "seizure"
BONN, MALOW = DATA / "bonn", DATA / "malow"
pytestmark = pytest.mark.skipif(not BONN.exists(), reason="../shared/data/seizure is not present")
#: The 84 contacts of the ECoG file: an 8x8 grid, two temporal strips, a depth shaft.
ECOG = [f"G{i}" for i in range(1, 65)] + [f"ATT{i}" for i in range(1, 7)] + [f"AD{i}" for i in range(1, 7)] + [f"PD{i}" for i in range(1, 9)]
ICTAL = ["G10", "G11", "AD2"]


def _segment(folder: str, index: int, sfreq: float) -> np.ndarray:
    """Bonn segment ``index`` of ``folder`` (volts) resampled to ``sfreq``."""
    rec = load_recording(sorted((BONN / folder).iterdir())[index])
    return resample(rec.data[0], int(round(rec.n_times * sfreq / rec.sfreq)))


def _export(path: Path, data: np.ndarray, names: list[str], sfreq: float, kind: str) -> Path:
    raw = mne.io.RawArray(data, mne.create_info(names, sfreq, kind), verbose="error")
    mne.export.export_raw(path, raw, fmt="edf", add_ch_type=kind != "eeg", overwrite=True, verbose="error")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """``one``: 1 channel named EEG at 200 Hz, a background then an ictal Bonn segment;
    ``ecog``: 84 ECoG contacts at 1000 Hz, interictal except the three :data:`ICTAL` ones."""
    tmp = tmp_path_factory.mktemp("montages")
    one = np.concatenate([_segment("A_Z", 0, 200.0), _segment("E_S", 0, 200.0)])[None]
    ecog = np.stack([_segment("E_S" if n in ICTAL else "C_N", i, 1000.0) for i, n in enumerate(ECOG)])
    return {
        "one": _export(tmp / "one.edf", one, ["EEG"], 200.0, "eeg"),
        "ecog": _export(tmp / "ecog.edf", ecog, ECOG, 1000.0, "ecog"),
    }


def _train(config: str, out: Path) -> Path:
    from bci.training import train

    cwd = os.getcwd()
    os.chdir(ROOT)  # the configs name ../shared/data relative to the project
    try:
        train(ROOT / "configs" / config, out, progress=False)
    finally:
        os.chdir(cwd)
    return out


@pytest.fixture(scope="module")
def bandpower(tmp_path_factory) -> Path:
    return _train("train_seizure_bandpower_lr.yaml", tmp_path_factory.mktemp("bp") / "model")


def _predict(model_dir: Path, path: Path, tmp_path: Path) -> list[dict]:
    out = tmp_path / "p.json"
    assert main(["predict", str(model_dir), str(path), "--json", str(out)]) == 0
    records = json.loads(out.read_text())
    p = np.array([r["seizure"] for r in records])
    assert np.all((p >= 0) & (p <= 1)) and np.allclose(p + [r["background"] for r in records], 1.0)
    return records


def test_seizure_configs_save_an_any_channel_contract(bandpower):
    meta = json.loads((bandpower / "model.json").read_text())
    assert meta["channels_contract"]["kind"] == "any"
    assert TrainedModel.load(bandpower).channels_contract == ChannelContract("any")


def test_ecog_types_come_from_the_edf_labels(files):
    rec = load_recording(files["ecog"])
    assert list(rec.channels.names) == ECOG and set(rec.channels.types) == {"ecog"} and rec.sfreq == 1000.0


def test_predict_on_one_channel_named_eeg(bandpower, files, tmp_path):
    records = _predict(bandpower, files["one"], tmp_path)
    assert len(records) == 45  # 47.2 s, padded to whole 1-s EDF records: windows of 4 s every 1 s
    assert all(r["top_channels"][0][0] == "EEG" and len(r["top_channels"]) == 1 for r in records)
    p = np.array([r["seizure"] for r in records])
    assert p[:15].max() < 0.2 and p[-15:].min() > 0.8  # Z001 then S001


def test_predict_on_84_ecog_contacts_reports_the_ictal_ones(bandpower, files, tmp_path):
    records = _predict(bandpower, files["ecog"], tmp_path)
    assert len(records) == 21  # 23.6 s, padded to 24 s
    assert all(len(r["top_channels"]) == 3 for r in records)
    assert np.mean([r["seizure"] for r in records]) > 0.8
    top = [name for r in records for name, _ in r["top_channels"]]
    assert np.mean([n in ICTAL for n in top]) > 0.9, top
    weights = [w for r in records for _, w in r["top_channels"]]
    assert all(0 <= w <= 1 for w in weights)


def test_predict_on_the_21_channel_malow_recording(bandpower, tmp_path):
    records = _predict(bandpower, MALOW, tmp_path)
    assert len(records) == 497
    names = set(load_recording(MALOW).channels.names)
    assert len(names) == 21 and all(n in names for r in records for n, _ in r["top_channels"])
    p = np.array([r["seizure"] for r in records])
    assert p.max() > 0.8 and np.median(p) < 0.2


def test_flat_contacts_are_left_out_and_never_reported(bandpower, files, tmp_path, caplog):
    rec = load_recording(files["ecog"])
    rec.data[ECOG.index("G10")] = 0.0
    model = TrainedModel.load(bandpower)
    processed, mapping = model.prepare_recording(rec)
    assert len(processed.channels) == 83 and "G10" not in processed.channels
    assert "1 flat channel(s) dropped: G10" in caplog.text
    records = model.predict_recording(rec)
    assert not any(n == "G10" for r in records for n, _ in r["top_channels"])


def test_a_config_may_narrow_the_contract_to_fixed(tmp_path, files, capsys):
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "train_seizure_bandpower_lr.yaml").read_text())
    cfg["train"].update(recordings=[str(BONN)], channels_contract="fixed")
    path = tmp_path / "fixed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--out", str(tmp_path / "m"), "--no-progress"]) == 0
    assert TrainedModel.load(tmp_path / "m").channels_contract.kind == "fixed"
    assert "reads 21 fixed channels (Fp1, Fp2, F3, F4, ...)" in capsys.readouterr().out
    assert main(["predict", str(tmp_path / "m"), str(files["one"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a fixed-channel model" in err[0] and "21 of 21 target channels are missing" in err[0]


def _fixed_model(tmp_path: Path, names: list[str]) -> Path:
    """A small fixed-channel MI-style model (covariances + MDM) saved to ``tmp_path``."""
    from pyriemann.classification import MDM
    from pyriemann.estimation import Covariances
    from sklearn.pipeline import make_pipeline

    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, len(names), 200)) * 1e-5
    y = np.repeat(["left_hand", "right_hand"], 10)
    X[y == "right_hand", 0] *= 3
    model = TrainedModel(
        name="MDM", estimator=make_pipeline(Covariances("oas"), MDM()).fit(X, y), classes=["left_hand", "right_hand"],
        input_channels=ChannelSet(names), sfreq=100.0, window_s=2.0, hop_s=0.5, preprocessing={"bandpass": [8, 30]},
    )  # fmt: skip
    return model.save(tmp_path / "mi")


def test_fixed_model_says_what_is_missing_and_what_could_be_interpolated(tmp_path, capsys):
    model_dir = _fixed_model(tmp_path, ["C3", "Cz", "C4", "SP1"])
    rng = np.random.default_rng(1)
    raw = mne.io.RawArray(rng.standard_normal((2, 3000)) * 1e-5, mne.create_info(["C3", "Cz"], 100.0, "eeg"), verbose="error")
    path = tmp_path / "two.edf"
    mne.export.export_raw(path, raw, fmt="edf", verbose="error")
    assert main(["predict", str(model_dir), str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: MDM is a fixed-channel model (channels_contract: fixed): 2 of 4 target channels are missing")
    assert "1 cannot be interpolated: no electrode positions for SP1" in err[0]
    assert "1 could be interpolated (C4) but only 2 present channels have positions" in err[0]


def test_fixed_model_reports_an_interpolation(tmp_path, caplog):
    model = TrainedModel.load(_fixed_model(tmp_path, ["C3", "Cz", "C4", "Pz"]))
    rng = np.random.default_rng(2)
    rec = load_recording(_export(tmp_path / "four.edf", rng.standard_normal((4, 3000)) * 1e-5, ["C3", "C4", "Fz", "Pz"], 100.0, "eeg"))
    records = model.predict_recording(rec)
    assert len(records) == 57 and "top_channels" not in records[0]
    assert "interpolated 1 (Cz)" in caplog.text


def test_old_model_folders_load_as_fixed_and_bad_contracts_are_refused(bandpower, tmp_path, capsys):
    import shutil

    old = shutil.copytree(bandpower, tmp_path / "old")
    meta = json.loads((old / "model.json").read_text())
    del meta["channels_contract"]
    (old / "model.json").write_text(json.dumps(meta))
    assert TrainedModel.load(old).channels_contract.kind == "fixed"
    for bad, found in (({"kind": "some"}, "'some'"), ({"kind": "any-of-type", "types": ["eog"]}, "['eog']"), ("any", "'any'")):
        meta["channels_contract"] = bad
        (old / "model.json").write_text(json.dumps(meta))
        with pytest.raises(ModelError, match="channels_contract|channel types") as exc:
            TrainedModel.load(old)
        assert found in str(exc.value)


def test_contract_narrows_never_widens_and_selects_by_type():
    channels = ChannelSet(["G1", "LA1", "Fp1", "EOG1"], ["ecog", "seeg", "eeg", "eog"])
    assert ChannelContract("any").select(channels).names == ("G1", "LA1", "Fp1")
    ieeg = ChannelContract("any").restrict("any-of-type", ["ecog", "seeg"])
    assert ieeg.select(channels).names == ("G1", "LA1")
    with pytest.raises(DataError, match="cannot be widened"):
        ChannelContract("fixed").restrict("any")
    with pytest.raises(DataError, match="expected channels of type ecog; found types eeg, eog"):
        ChannelContract("any-of-type", ["ecog"]).select(channels.pick([2, 3]))


def test_dashboard_decodes_84_ecog_contacts_and_names_the_ictal_ones(bandpower, files, tmp_path):
    """``bci dashboard --replay ECOG.edf --model MODEL --screenshot``: 84 contacts decoded live, the alarm names the ictal ones."""
    import subprocess
    import sys

    from gui.eventlog import EventLog

    png, db = tmp_path / "ecog.png", tmp_path / "events.sqlite"
    cmd = [sys.executable, "-m", "bci.cli", "dashboard", "--replay", str(files["ecog"]), "--model", str(bandpower),
           "--config", str(ROOT / "configs" / "dashboard_ecog.yaml"), "--events", str(db),
           "--speed", "3", "--seconds", "10", "--screenshot", str(png)]  # fmt: skip
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert png.stat().st_size > 10_000
    log = EventLog(db)
    loaded, = log.events("model_loaded")
    assert loaded.details["n_channels"] == 84 and loaded.details["channel_weights"]
    alarm = log.events("alarm")[0]
    assert sorted(alarm.details["channels"]) == sorted(ICTAL)
    log.close()


@pytest.mark.filterwarnings("ignore:No events found:RuntimeWarning", "ignore:EDF format requires:RuntimeWarning")
def test_bids_ieeg_sidecars_give_types_and_exclude_bad_contacts(bandpower, tmp_path, caplog):
    """A BIDS iEEG recording: channels.tsv types (ecog, seeg) and a bad contact, read through mne-bids."""
    from mne_bids import BIDSPath, write_raw_bids

    names = ECOG[:8] + ["LA1", "LA2", "LA3", "LA4"]
    data = np.stack([_segment("E_S" if n in ("G2", "LA1") else "C_N", i, 500.0) for i, n in enumerate(names)])
    raw = mne.io.RawArray(data, mne.create_info(names, 500.0, ["ecog"] * 8 + ["seeg"] * 4), verbose="error")
    raw.info["bads"] = ["G3"]
    bids = BIDSPath(subject="01", task="monitoring", run="01", datatype="ieeg", root=tmp_path / "bids")
    write_raw_bids(raw, bids, format="EDF", allow_preload=True, verbose=False)
    path = bids.copy().update(suffix="ieeg", extension=".edf").fpath
    rec = load_recording(path)
    assert "1 channel(s) marked bad excluded: G3" in caplog.text
    assert rec.provenance["reader"] == "mne-bids" and "G3" not in rec.channels
    assert dict(zip(rec.channels.names, rec.channels.types)) == {n: "ecog" if n.startswith("G") else "seeg" for n in names if n != "G3"}
    records = TrainedModel.load(bandpower).predict_recording(rec)
    assert len(records) == 21 and all(n != "G3" for r in records for n, _ in r["top_channels"])
    assert {r["top_channels"][0][0] for r in records} <= {"G2", "LA1"}


def test_shaft_bipolar_pairs_neighbouring_contacts_and_reports_the_pairs(bandpower, files):
    from bci.preprocess import Preprocessor, shaft_pairs

    channels = ChannelSet(["G1", "G2", "G3", "LA01", "LA02", "LA4", "Fp1", "F3"], ["ecog"] * 3 + ["seeg"] * 3 + ["eeg"] * 2)
    assert shaft_pairs(channels) == [("G1", "G2"), ("G2", "G3"), ("LA01", "LA02")]
    rec = load_recording(files["ecog"])
    processed = Preprocessor(reference="shaft_bipolar").apply(rec)
    assert len(processed.channels) == 63 + 5 + 5 + 7 and processed.channels.names[:2] == ("G1-G2", "G2-G3")
    model = TrainedModel.load(bandpower)
    model.preprocessing["reference"] = "shaft_bipolar"
    records = model.predict_recording(rec)
    assert {name for r in records for name, _ in r["top_channels"]} <= {"G9-G10", "G10-G11", "G11-G12", "AD1-AD2", "AD2-AD3"}
    with pytest.raises(DataError, match="expected neighbouring ecog/seeg/dbs contacts"):
        Preprocessor(reference="shaft_bipolar").apply(load_recording(MALOW))


def test_contract_inferred_from_the_pipeline():
    from pyriemann.classification import MDM
    from pyriemann.estimation import Covariances
    from sklearn.pipeline import make_pipeline

    from bci.model import inferred_contract
    from pipelines.deep import DeepClassifier
    from pipelines.seizure import make_seizure_pipeline

    assert inferred_contract(make_seizure_pipeline("BP+LR")).kind == "any"
    assert inferred_contract(make_seizure_pipeline("ACM+TS+LR")).kind == "any"
    assert inferred_contract(DeepClassifier("MVPFormer")).kind == "any"  # joint or channel-independent: any channel count
    assert inferred_contract(DeepClassifier("DBConformer")).kind == "fixed"
    assert inferred_contract(make_pipeline(Covariances(), MDM())).kind == "fixed"
