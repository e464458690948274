"""Shared fixtures: the real recordings in ../shared/data, and a sandboxed MNE home."""

import os
import tempfile
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EEGBCI = DATA / "mne_data" / "MNE-eegbci-data" / "files" / "eegmmidb" / "1.0.0"


def pytest_configure(config):
    # MNE/MOABB write their config and caches under the home folder: keep them out of
    # the user's home and never in the read-only shared data.
    home = Path(os.environ.get("PYTEST_BCI_HOME", "/tmp/bci-test-home"))
    home.mkdir(parents=True, exist_ok=True)
    os.environ["_MNE_FAKE_HOME_DIR"] = str(home)
    # the application's own caches (pretraining runs, exported ONNX graphs): fresh per run
    os.environ["BCI_CACHE"] = tempfile.mkdtemp(prefix="bci-cache-")
    os.environ.setdefault("MOABB_DOWNLOAD_PROVIDER", "upstream")
    if DATA.exists():
        os.environ.setdefault("MNE_DATA", str(DATA / "mne_data"))


def pytest_sessionstart(session):
    # A broken install ends the run here with one line naming the package and the fix,
    # instead of a hundred collection errors from inside the libraries.
    from bci.environment import broken_install_message, check_imports

    message = broken_install_message(check_imports())
    if message:
        pytest.exit(message, returncode=3)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.exists():
        pytest.skip("../shared/data is not present")
    return DATA


def train_config(tmp_path: Path, pipeline: str = "acm_ts_svm_auto", **train) -> Path:
    """A ``bci train`` config on PhysioNet subject 1's imagery runs (real files), written to tmp_path."""
    import yaml

    section = {"pipeline": pipeline, "channels": ["FC3", "FC4", "C3", "Cz", "C4", "CP3", "CP4"],
               "events": ["left_hand", "right_hand"], "tmin": 0.5, "tmax": 2.5, **train}  # fmt: skip
    cfg = {
        "name": "test model", "seed": 7,
        "datasets": [{"name": "PhysionetMI", "subjects": [1], "params": {"imagined": True}}],
        "preprocessing": {"bandpass": [8, 30]}, "train": section,
    }  # fmt: skip
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory, data_dir) -> Path:
    """A saved left/right ACM+TS+SVM model (``bci train`` output) from real PhysioNet data."""
    from bci.training import train

    tmp = tmp_path_factory.mktemp("model")
    train(train_config(tmp), tmp / "acm", progress=False)
    return tmp / "acm"


#: Channels of the synthetic seizure recordings (10-20 names, so channel mapping is exact).
SEIZURE_CHANNELS = ["Fp1", "Fp2", "C3", "C4", "T7", "T8", "O1", "O2"]


def synthetic_seizure_raw(duration_s: float, seizure: tuple[float, float], sfreq: float = 100.0, seed: int = 0):
    """An ``mne.io.RawArray`` of background EEG (white noise and a 10 Hz rhythm, about
    15 uV) with a 3 Hz, 150 uV spike-and-wave-like rhythm on every channel during
    ``seizure = (onset_s, end_s)``, annotated ``sz``."""
    import mne
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * sfreq)) / sfreq
    x = 10e-6 * rng.standard_normal((len(SEIZURE_CHANNELS), len(t))) + 10e-6 * np.sin(2 * np.pi * 10 * t)
    ictal = (t >= seizure[0]) & (t < seizure[1])
    x[:, ictal] += 150e-6 * (np.sin(2 * np.pi * 3 * t[ictal]) + 0.5 * np.sin(2 * np.pi * 6 * t[ictal]))
    raw = mne.io.RawArray(x, mne.create_info(SEIZURE_CHANNELS, sfreq, "eeg"), verbose="error")
    raw.set_annotations(mne.Annotations([seizure[0]], [seizure[1] - seizure[0]], ["sz"]))
    return raw


#: Seizures of the recordings in the ``seizure_bids`` dataset, by subject.
BIDS_SEIZURES = {"01": (150.0, 210.0), "02": (60.0, 100.0)}


@pytest.fixture(scope="session")
def seizure_bids(tmp_path_factory) -> Path:
    """A BIDS-EEG dataset written by mne-bids (EDF): two 5-minute recordings, each with one
    synthetic seizure (:data:`BIDS_SEIZURES`) in its events.tsv (``trial_type`` sz)."""
    import mne_bids

    root = tmp_path_factory.mktemp("bids") / "szbids"
    for i, (subject, seizure) in enumerate(BIDS_SEIZURES.items()):
        path = mne_bids.BIDSPath(subject=subject, session="01", task="szMonitoring", run="00", datatype="eeg", root=root)
        raw = synthetic_seizure_raw(300.0, seizure, seed=i)
        mne_bids.write_raw_bids(raw, path, format="EDF", allow_preload=True, verbose="error")
    return root


def eeg_outlet(name: str, labels, sfreq: float, *, labelled: bool = True, channel_format: str = "float32"):
    """An LSL outlet of EEG in microvolts named ``name`` with channel ``labels`` in its meta-data
    (none when ``labelled`` is False), as a headset's driver publishes it."""
    import uuid

    import pylsl

    formats = {"float32": pylsl.cf_float32, "double64": pylsl.cf_double64}
    info = pylsl.StreamInfo(name, "EEG", len(labels), sfreq, formats[channel_format], f"src-{uuid.uuid4().hex[:8]}")
    if labelled:
        chans = info.desc().append_child("channels")
        for label in labels:
            ch = chans.append_child("channel")
            for key, value in (("label", label), ("unit", "microvolts"), ("type", "EEG")):
                ch.append_child_value(key, value)
    return pylsl.StreamOutlet(info)
