"""Shared fixtures: the real recordings in ../shared/data, and a sandboxed MNE home."""

import os
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
