"""MOABB datasets offline, and the local epochs-folder adapter."""

import time

import numpy as np
import pytest

from bci.datasets import get_dataset, load_subject_data
from bci.errors import ConfigError, DataError


@pytest.mark.slow
def test_physionet_left_right_subjects_1_to_10_offline(data_dir):
    from moabb.paradigms import LeftRightImagery

    dataset = get_dataset("PhysionetMI", imagined=True)
    paradigm = LeftRightImagery()
    t0 = time.perf_counter()
    for subject in range(1, 11):
        X, y, meta = load_subject_data(paradigm, dataset, subject)
        assert X.shape[1:] == (64, 481)  # 64 channels, 3 s at 160 Hz
        labels, counts = np.unique(y, return_counts=True)
        assert labels.tolist() == ["left_hand", "right_hand"]
        assert abs(counts[0] - counts[1]) <= 3 and 40 <= len(y) <= 50
        assert sorted(meta.run.unique()) == ["0", "1", "2"]
    assert time.perf_counter() - t0 < 120  # no network waits (about 3 s a subject)


def test_unknown_dataset_suggests_names():
    with pytest.raises(ConfigError, match="unknown dataset 'Physionet'.*PhysionetMI"):
        get_dataset("Physionet")


def test_local_epochs_bci_iv_2b(data_dir):
    from moabb.paradigms import LeftRightImagery

    ds = get_dataset("LocalEpochs", path=str(data_dir / "bnci2014_004"))
    assert ds.subject_list == [1, 2, 3, 4, 5] and ds.n_sessions == 5
    X, y, meta = LeftRightImagery(fmin=0.5, fmax=100).get_data(ds, [2])
    raw = np.load(data_dir / "bnci2014_004" / "B02.npz")["X"]
    assert X.shape == (600, 3, 1001) and sorted(meta.session.unique()) == ["1", "2", "3", "4", "5"]
    # trials come back intact (a wide band barely touches them): same waveform
    assert np.corrcoef(X[10, 1, :1000], raw[10, 1])[0, 1] > 0.999


def _write(folder, name, **arrays):
    base = dict(X=np.zeros((4, 2, 10), np.float32), y=np.array([1, 2, 1, 2]), session=np.array([1, 1, 2, 2]),
                ch_names=np.array(["C3", "C4"]), sfreq=np.array(100.0))
    base.update(arrays)
    folder.mkdir(exist_ok=True)
    np.savez(folder / name, **base)


def test_local_epochs_bad_input(tmp_path):
    with pytest.raises(DataError, match="no <name>NN.npz"):
        get_dataset("LocalEpochs", path=str(tmp_path))
    _write(tmp_path / "a", "S01.npz", y=np.array([1, 2, 1]))
    with pytest.raises(DataError, match=r"S01.npz: X has 4 trials but y has 3"):
        get_dataset("LocalEpochs", path=str(tmp_path / "a"))
    _write(tmp_path / "b", "S01.npz", y=np.array([1, 1, 1, 2]))
    with pytest.raises(DataError, match=r"S01.npz: session 1 holds only class \[1\]"):
        get_dataset("LocalEpochs", path=str(tmp_path / "b"))
    _write(tmp_path / "c", "S01.npz", y=np.array([1, 2, 3, 2]))
    with pytest.raises(DataError, match=r"S01.npz: unknown class labels \[3\]"):
        get_dataset("LocalEpochs", path=str(tmp_path / "c"))


def test_local_recordings_cross_session(tmp_path, data_dir):
    """Continuous recordings (one file = one session) through MOABB's CrossSessionEvaluation machinery."""
    from moabb.paradigms import LeftRightImagery

    from bci.evaluate import make_splits
    from conftest import EEGBCI

    files = [str(EEGBCI / "S001" / f"S001R{r:02d}.edf") for r in (4, 8, 12)]
    dataset = get_dataset("LocalRecordings", path=files, events={"T1": "left_hand", "T2": "right_hand"}, interval=[0.5, 2.5])
    X, y, meta = load_subject_data(LeftRightImagery(fmin=8, fmax=30), dataset, 1)
    assert X.shape == (45, 64, 321) and sorted(meta.session.unique()) == ["0", "1", "2"]
    assert sorted(np.unique(y)) == ["left_hand", "right_hand"]
    splits = make_splits("cross_session", {}, y, meta, seed=1)
    assert len(splits) == 3 and all(len(s.test) == 15 for s in splits)
    with pytest.raises(DataError, match="none of the events"):
        bad = get_dataset("LocalRecordings", path=files[:1], events={"L": "left_hand", "R": "right_hand"}, interval=[0, 2])
        load_subject_data(LeftRightImagery(), bad, 1)
    with pytest.raises(DataError, match="no recording at"):
        get_dataset("LocalRecordings", path=str(tmp_path / "*.fif"), events={"a": "b"}, interval=[0, 1])


def test_epochs_skip_bad_spans():
    import mne

    from bci.channels import ChannelSet
    from bci.io import Recording
    from bci.preprocess import epochs_from_annotations

    ann = mne.Annotations([1.0, 5.0, 9.0, 5.5], [0, 0, 0, 1.0], ["a", "b", "a", "BAD_gap"])
    rec = Recording(np.random.default_rng(0).standard_normal((2, 1200)), 100.0, ChannelSet(["C3", "C4"]), ann)
    X, y, onsets = epochs_from_annotations(rec, {"a": "A", "b": "B"}, 0.0, 1.0)
    assert onsets.tolist() == [1.0, 9.0] and y.tolist() == ["A", "A"]
