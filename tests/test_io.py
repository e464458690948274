"""Recordings from every file family in ../shared/data, and bad input."""

import numpy as np
import pytest

from bci.errors import DataError
from bci.io import Recording, describe, load_recording
from bci.channels import ChannelSet

from conftest import EEGBCI


@pytest.mark.parametrize(
    "relpath, n_channels, sfreq",
    [
        ("mne_data/MNE-eegbci-data/files/eegmmidb/1.0.0/S001/S001R04.edf", 64, 160.0),
        ("seizure/malow", 21, 100.0),
        ("seizure/malow/ch05.inp", 21, 100.0),
        ("seizure/bonn/E_S/S001.txt", 1, 173.61),
        ("formats/test_raw.set", 32, 128.0),
        ("formats/test_reduced.edf", 139, 512.0),
    ],
)
def test_every_family_loads_with_right_shape(data_dir, relpath, n_channels, sfreq):
    rec = load_recording(data_dir / relpath)
    assert len(rec.channels) == n_channels == rec.data.shape[0]
    assert rec.sfreq == pytest.approx(sfreq)
    # volts: EEG amplitudes are tens of microvolts, never thousands of volts
    eeg = [i for i, t in enumerate(rec.channels.types) if t in ("eeg", "seeg")]
    assert 1e-7 < np.median(np.nanstd(rec.data[eeg], axis=1)) < 1e-3


def test_eegbci_annotations_and_channel_names(data_dir):
    rec = load_recording(EEGBCI / "S001" / "S001R04.edf")
    assert set(rec.annotations.description) == {"T0", "T1", "T2"}
    assert rec.duration == pytest.approx(125.0)
    assert "Fp1" in rec.channels.names and "Fp1." in rec.channels.original_names
    text = describe(rec)
    assert "channels: 64" in text and "160 Hz" in text and "T1 x" in text


def test_malow_names_normalised_with_positions(data_dir):
    rec = load_recording(data_dir / "seizure/malow")
    names = rec.channels.names
    assert names[14:18] == ("T7", "T8", "P7", "P8")  # T3 T4 T5 T6 in the CSV
    assert "SP1" in names and "SP1" not in rec.channels.positions
    assert "Cz" in rec.channels.positions and np.linalg.norm(rec.channels.positions["Cz"]) > 0.05
    assert rec.duration == pytest.approx(500.0)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_recording(tmp_path / "nope.edf")


def test_unsupported_extension(tmp_path):
    f = tmp_path / "x.xyz"
    f.write_text("1\n")
    with pytest.raises(DataError, match="unsupported file type '.xyz'"):
        load_recording(f)


def test_truncated_edf_header(tmp_path, data_dir):
    src = (data_dir / "formats/test_reduced.edf").read_bytes()
    f = tmp_path / "cut.edf"
    f.write_bytes(src[:300])
    with pytest.raises(DataError, match=r"cut.edf: cannot read as EDF"):
        load_recording(f)


def test_text_with_non_numeric_line(tmp_path):
    f = tmp_path / "Z001.txt"
    f.write_text("1\n2\nabc\n" + "3\n" * 4094)
    with pytest.raises(DataError, match=r"line 3: expected one number per line, found 'abc'"):
        load_recording(f)


def test_empty_text_recording(tmp_path):
    f = tmp_path / "Z001.txt"
    f.write_text("\n")
    with pytest.raises(DataError, match="empty recording"):
        load_recording(f)


def test_wrong_length_bonn_segment(tmp_path):
    f = tmp_path / "Z001.txt"
    f.write_text("1\n" * 100)
    with pytest.raises(DataError, match="4097 samples"):
        load_recording(f)


def test_channel_flags_flat_nan_clipped():
    rng = np.random.default_rng(0)
    data = rng.normal(0, 20e-6, (4, 1000))
    data[1] = 0.0
    data[2, :100] = np.nan
    data[3] = np.clip(data[3], -10e-6, 10e-6)  # saturated amplifier
    rec = Recording(data, 250.0, ChannelSet(["C3", "Cz", "C4", "Pz"]))
    flags = rec.channel_flags()
    assert "C3" not in flags
    assert flags["Cz"] == ["flat"]
    assert flags["C4"] == ["nan 10%"]
    assert flags["Pz"] == ["clipped"]


def test_all_nan_channel_is_flagged_not_dropped():
    data = np.ones((2, 50)) * 1e-5
    data[0] = np.nan
    rec = Recording(data, 100.0, ChannelSet(["x1", "x2"]))
    assert rec.channel_flags()["x1"] == ["nan 100%", "flat"]
    assert rec.data.shape == (2, 50)


def test_empty_recording_refused():
    with pytest.raises(DataError, match="empty recording"):
        Recording(np.zeros((2, 0)), 100.0, ChannelSet(["x1", "x2"]))


def test_to_raw_keeps_annotations_of_dated_recordings(data_dir):
    rec = load_recording(EEGBCI / "S001" / "S001R04.edf")
    assert rec.annotations.orig_time is not None
    raw = rec.to_raw()
    assert list(raw.annotations.description) == list(rec.annotations.description)
    np.testing.assert_allclose(raw.annotations.onset, rec.annotations.onset)
