"""Preprocessing: filters do what they say; streaming equals causal offline."""

import numpy as np
import pytest

from bci.channels import ChannelSet
from bci.errors import DataError
from bci.io import Recording, load_recording
from bci.preprocess import Preprocessor, epochs_from_annotations, reference_matrix, sliding_windows

from conftest import EEGBCI

FS = 250.0


def _sines(freqs, seconds=8.0, n_channels=3):
    t = np.arange(int(seconds * FS)) / FS
    x = sum(np.sin(2 * np.pi * f * t) for f in freqs) * 10e-6
    return Recording(np.tile(x, (n_channels, 1)), FS, ChannelSet(["C3", "Cz", "C4"][:n_channels]))


def _amplitude(x, f):
    t = np.arange(x.shape[-1]) / FS
    return 2 * np.abs(np.mean(x * np.exp(-2j * np.pi * f * t), axis=-1))


def test_bandpass_keeps_10hz_removes_2_and_60hz():
    out = Preprocessor(bandpass=[8, 30]).apply(_sines([2, 10, 60]))
    mid = out.data[0, 250:-250]
    assert _amplitude(mid, 10) == pytest.approx(10e-6, rel=0.03)
    assert _amplitude(mid, 2) < 0.2e-6 and _amplitude(mid, 60) < 0.2e-6


def test_notch_removes_50hz_keeps_10hz():
    out = Preprocessor(notch=50).apply(_sines([10, 50]))
    mid = out.data[0, 250:-250]
    assert _amplitude(mid, 50) < 0.3e-6
    assert _amplitude(mid, 10) == pytest.approx(10e-6, rel=0.02)


def test_resample_rate_and_content():
    out = Preprocessor(resample=125.0).apply(_sines([10]))
    assert out.sfreq == 125.0 and out.data.shape[1] == 1000
    t = np.arange(1000) / 125.0
    assert np.abs(out.data[0, 50:-50] - 10e-6 * np.sin(2 * np.pi * 10 * t[50:-50])).max() < 0.5e-6


def test_average_reference_rows_sum_to_zero():
    m, names = reference_matrix(ChannelSet(["C3", "Cz", "C4"]), "average")
    assert np.allclose(m.sum(axis=1), 0) and names == ["C3", "Cz", "C4"]


def test_double_banana_on_malow(data_dir):
    rec = load_recording(data_dir / "seizure/malow")
    m, names = reference_matrix(rec.channels, "double_banana")
    assert names[:4] == ["Fp1-F7", "F7-T7", "T7-P7", "P7-O1"] and len(names) == 18
    i, j = rec.channels.index("Fp1"), rec.channels.index("F7")
    out = m @ rec.data[:, :100]
    assert np.allclose(out[0], rec.data[i, :100] - rec.data[j, :100])


@pytest.mark.parametrize("resample", [None, 128.0, 100.0])
def test_streaming_equals_causal_offline_on_real_recording(data_dir, resample):
    rec = load_recording(EEGBCI / "S001" / "S001R04.edf")
    pre = Preprocessor(reference="average", notch=60, bandpass=[8, 30], resample=resample)
    offline = pre.apply(rec, causal=True).data
    pre.start(rec.sfreq, rec.channels)
    rng = np.random.default_rng(1)
    chunks, i = [], 0
    while i < rec.n_times:
        n = int(rng.integers(1, 40))
        chunks.append(pre.step(rec.data[:, i : i + n]))
        i += n
    online = np.concatenate(chunks, axis=1)
    assert online.shape == offline.shape
    assert np.abs(online - offline).max() <= 1e-9 * np.abs(offline).max()


def test_step_rejects_wrong_channel_count():
    pre = Preprocessor(bandpass=[8, 30])
    pre.start(FS, ChannelSet(["C3", "Cz", "C4"]))
    with pytest.raises(DataError, match=r"expected a chunk of shape \(3, n_samples\)"):
        pre.step(np.zeros((2, 10)))


def test_nan_input_refused_with_channel_name():
    rec = _sines([10])
    rec.data[1, 5] = np.nan
    with pytest.raises(DataError, match="NaN/inf samples: Cz"):
        Preprocessor(bandpass=[8, 30]).apply(rec)


def test_bandpass_above_nyquist_refused():
    with pytest.raises(DataError, match="below Nyquist"):
        Preprocessor(bandpass=[8, 140]).apply(_sines([10]))


def test_windows_and_epochs(data_dir):
    rec = load_recording(EEGBCI / "S001" / "S001R04.edf")
    X, y, onsets = epochs_from_annotations(rec, {"T1": "left", "T2": "right"}, 0.0, 3.0)
    assert X.shape == (15, 64, 480) and set(y) == {"left", "right"}
    W, starts = sliding_windows(rec.data, rec.sfreq, 2.0, 0.5)
    assert W.shape[1:] == (64, 320) and starts[1] == 0.5
    assert np.array_equal(W[3], rec.data[:, 240:560])
