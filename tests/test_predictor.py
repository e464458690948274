"""The one streaming predictor (TrainedModel.stream): what bci stream, the dashboard and bci predict run."""

import numpy as np
import pytest

from bci.errors import DataError
from tests.conftest import EEGBCI

RUN = EEGBCI / "S001" / "S001R12.edf"


@pytest.fixture(scope="module")
def model_and_recording(trained_model_dir):
    from bci.io import load_recording
    from bci.model import TrainedModel

    return TrainedModel.load(trained_model_dir), load_recording(RUN)


def _push_all(predictor, data, chunk):
    ends, probas = [], []
    for start in range(0, data.shape[1], chunk):
        predictor.push(data[:, start : start + chunk])
        for w in predictor.windows:
            ends.append(w.end)
            probas.append(w.proba)
    return ends, np.array(probas)


def test_chunking_never_changes_the_decisions_and_they_are_the_offline_windows(model_and_recording):
    """Pushed 1, 37 or 4000 samples at a time, the same windows get the same probabilities, and
    those are the model on the windows cut from the whole recording preprocessed at once."""
    from bci.io import Recording
    from bci.preprocess import sliding_windows

    model, rec = model_and_recording
    data = rec.data[:, : int(12 * rec.sfreq)]
    runs = {}
    for chunk in (1, 37, 4000):
        p = model.stream(rec.sfreq, rec.channels, catch_up=True, flat_uv=0.0)
        runs[chunk] = _push_all(p, data, chunk)
    ends, proba = runs[4000]
    assert len(ends) > 10 and ends[0] == model.n_times
    assert np.diff(ends).tolist() == [p.hop] * (len(ends) - 1)
    for chunk in (1, 37):
        assert runs[chunk][0] == ends
        np.testing.assert_allclose(runs[chunk][1], proba, rtol=0, atol=1e-10)
    processed, _ = model.prepare_recording(Recording(data=data, sfreq=rec.sfreq, channels=rec.channels))
    windows, _ = sliding_windows(processed.data, processed.sfreq, model.window_s, model.hop_s)
    np.testing.assert_allclose(model.predict_proba(windows), proba, atol=1e-10)


def test_predict_recording_is_the_predictor_over_the_recording(model_and_recording):
    model, rec = model_and_recording
    records = model.predict_recording(rec, chunk_s=3.0)
    p = model.stream(rec.sfreq, rec.channels, catch_up=True, flat_uv=0.0)
    ends, proba = _push_all(p, rec.data, rec.data.shape[1])
    assert [r["end_s"] for r in records] == [round(e / model.sfreq, 6) for e in ends]
    np.testing.assert_allclose([[r[c] for c in model.classes] for r in records], proba, atol=1e-10)


def test_live_mode_decides_only_the_newest_due_window(model_and_recording):
    model, rec = model_and_recording
    p = model.stream(rec.sfreq, rec.channels, flat_uv=0.0)
    n = 6 * int(rec.sfreq)
    out = p.push(rec.data[:, :n])
    due = (n * model.sfreq // rec.sfreq - model.n_times) // p.hop + 1
    assert out.shape == (1, len(model.classes)) and p.dropped_windows == due - 1
    assert p.windows[0].end == model.n_times + (due - 1) * p.hop
    # then one decision per hop as samples keep coming
    decided = [p.windows[0].end]
    for start in range(n, n + 2 * int(rec.sfreq), 8):
        p.push(rec.data[:, start : start + 8])
        decided += [w.end for w in p.windows]
    assert np.diff(decided).tolist() == [p.hop] * (len(decided) - 1) and p.dropped_windows == due - 1


def test_nan_samples_withhold_the_windows_they_touch_then_decisions_resume(model_and_recording):
    model, rec = model_and_recording
    data = rec.data[:, : int(14 * rec.sfreq)].copy()
    bad = int(5 * rec.sfreq)
    data[3, bad : bad + 10] = np.nan
    p = model.stream(rec.sfreq, rec.channels, catch_up=True, settle_s=0.5, flat_uv=0.0)
    windows = []
    for start in range(0, data.shape[1], 32):
        p.push(data[:, start : start + 32])
        windows += p.windows
    withheld = [w for w in windows if w.proba is None]
    assert withheld and all(rec.channels.names[3] in w.reason for w in withheld)
    touched = [w for w in windows if w.end - model.n_times < (bad + 10) * model.sfreq / rec.sfreq + 0.5 * model.sfreq
               and w.end > bad * model.sfreq / rec.sfreq]  # fmt: skip
    assert {w.end for w in withheld} == {w.end for w in touched}
    assert windows[-1].proba is not None and np.isfinite(windows[-1].proba).all()


def test_flat_source_channels_withhold_with_their_names(model_and_recording):
    model, rec = model_and_recording
    data = rec.data[:, : int(8 * rec.sfreq)].copy()
    row = rec.channels.index(model.input_channels.names[0])
    data[row] = 1e-5  # a disconnected electrode: constant offset
    p = model.stream(rec.sfreq, rec.channels, catch_up=True)
    assert p.push(data) is None
    assert p.windows and all(w.reason == f"flat channels: {rec.channels.names[row]}" for w in p.windows)


def test_wrong_input_is_refused_in_one_line(model_and_recording):
    model, rec = model_and_recording
    with pytest.raises(DataError, match="does not resample"):
        model.stream(rec.sfreq * 2, rec.channels)
    p = model.stream(rec.sfreq, rec.channels)
    with pytest.raises(DataError, match=f"expected chunks of {len(rec.channels)} channels"):
        p.push(rec.data[:3, :10])
