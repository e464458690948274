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


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.exists():
        pytest.skip("../shared/data is not present")
    return DATA
