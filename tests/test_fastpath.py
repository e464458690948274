"""The live loop's fast inference paths give the reference paths' probabilities.

- :class:`pipelines.deep.DeepClassifier`'s direct module call vs skorch's ``predict_proba``;
- :class:`pipelines.deep.OnnxProba` (the network in ONNX Runtime) vs the torch module, and
  :class:`pipelines.deep.OnnxSegmentStep` (MVPFormer's streaming step) vs the eager step;
- :mod:`pipelines.fastpath` (closed-form tangent space + linear classifier) vs the scikit-learn
  pipeline, through :meth:`bci.model.TrainedModel.predict_proba` too;
- :mod:`realtime.telemetry`'s p99.9.

All on real PhysioNet EEGBCI trials (subject 1, runs 4 and 8, 8-30 Hz, 0.5-2.5 s).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import EEGBCI

CHANNELS = ["FC3", "FC1", "FCz", "FC2", "FC4", "C3", "C1", "Cz", "C2", "C4", "CP3", "CPz", "CP4"]


@pytest.fixture(scope="module")
def trials():
    mne = pytest.importorskip("mne")
    files = [EEGBCI / "S001" / f"S001R{r:02d}.edf" for r in (4, 8)]
    if not all(f.is_file() for f in files):
        pytest.skip("PhysioNet EEGBCI subject 1 is not in ../shared/data")
    X, y = [], []
    for f in files:
        raw = mne.io.read_raw_edf(f, preload=True, verbose=False)
        mne.datasets.eegbci.standardize(raw)
        raw.pick(CHANNELS).filter(8.0, 30.0, verbose=False)
        events, _ = mne.events_from_annotations(raw, event_id={"T1": 1, "T2": 2}, verbose=False)
        ep = mne.Epochs(raw, events, tmin=0.5, tmax=2.5 - 1 / 160, baseline=None, preload=True, verbose=False)
        X.append(ep.get_data())
        y.append(np.where(ep.events[:, 2] == 1, "left_hand", "right_hand"))
    return np.concatenate(X), np.concatenate(y)


# ------------------------------------------------------------------- deep
@pytest.mark.parametrize("name", ["DBConformer", "EEGNet"])
def test_deep_direct_path_equals_skorch(trials, name):
    import torch

    from pipelines.deep import _skorch_proba, make_deep_pipeline

    X, y = trials
    torch.set_num_threads(1)
    clf = make_deep_pipeline(name, sfreq=160.0, max_epochs=2, batch_size=16, seed=0).fit(X, y)
    for batch in (X[:1], X[:16], X):  # one window (the live loop), one batch, several batches (chunked)
        fast, ref = clf.predict_proba(batch), _skorch_proba(clf, batch)
        assert fast.shape == ref.shape == (len(batch), 2) and fast.dtype == ref.dtype
        np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-6)
    assert not clf.module_.training
    clf.module_.train()  # left in training mode (e.g. by a fine-tune): predictions switch it back, as skorch does
    np.testing.assert_allclose(clf.predict_proba(X[:3]), _skorch_proba(clf, X[:3]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["DBConformer", "EEGNet"])
def test_onnx_path_equals_torch_and_serves_the_live_loop(trials, name):
    import torch

    from bci.channels import ChannelSet
    from bci.model import TrainedModel
    from pipelines.deep import OnnxProba, make_deep_pipeline
    from pipelines.fastpath import compile_proba

    X, y = trials
    torch.set_num_threads(1)
    clf = make_deep_pipeline(name, sfreq=160.0, max_epochs=2, batch_size=16, seed=0).fit(X, y)
    onnx = compile_proba(clf)
    assert isinstance(onnx, OnnxProba) and onnx.valid()
    for x in X[:10]:  # one window at a time, as the live loop decides
        np.testing.assert_allclose(onnx(x[None]), clf.predict_proba(x[None]), rtol=0, atol=1e-5)
    np.testing.assert_allclose(onnx(X[:16]), clf.predict_proba(X[:16]), rtol=0, atol=1e-6)  # a batch: torch's path
    model = TrainedModel(name=name, estimator=clf, classes=["left_hand", "right_hand"], input_channels=ChannelSet(CHANNELS),
                         sfreq=160.0, window_s=2.0, hop_s=0.5, preprocessing={})  # fmt: skip
    model.prepare()  # the live loop's start: the export already made is reused, not redone
    assert model._fast_proba() is onnx is clf.onnx_proba()
    np.testing.assert_allclose(model.predict_proba(X[3:4]), clf.predict_proba(X[3:4]), rtol=0, atol=1e-5)
    clf.fit(X[10:], y[10:])  # a refit replaces the network: the exported copy is stale
    assert not onnx.valid() and model._fast_proba() is not onnx


def test_exported_graph_is_cached_checked_and_redone_when_stale(trials, tmp_path, monkeypatch, caplog):
    """A later start with the same network loads the exported graph from the cache instead of
    exporting again; a corrupt cached graph is exported again; another network gets its own."""
    import logging

    import torch

    from pipelines.deep import OnnxProba, make_deep_pipeline

    monkeypatch.setenv("BCI_CACHE", str(tmp_path))
    X, y = trials
    clf = make_deep_pipeline("EEGNet", sfreq=160.0, max_epochs=1, batch_size=16, seed=0).fit(X, y)
    exports = []
    export = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: (exports.append(1), export(*a, **k))[1])
    first = OnnxProba.compile(clf)
    (graph,) = (tmp_path / "onnx").glob("*.onnx")
    assert len(exports) == 1 and graph.stat().st_size > 1000
    again = OnnxProba.compile(clf)  # the next start: loaded, not exported
    assert len(exports) == 1
    np.testing.assert_array_equal(again(X[:1]), first(X[:1]))
    graph.write_bytes(b"not a graph")
    with caplog.at_level(logging.INFO, logger="pipelines.deep"):
        redone = OnnxProba.compile(clf)
    assert len(exports) == 2 and "does not give the network's outputs; exporting again" in caplog.text
    np.testing.assert_allclose(redone(X[:1]), clf.predict_proba(X[:1]), rtol=0, atol=1e-5)
    assert graph.stat().st_size > 1000  # rewritten
    clf.fit(X[10:], y[10:])  # other weights: another graph
    OnnxProba.compile(clf)
    assert len(exports) == 3 and len(list((tmp_path / "onnx").glob("*.onnx"))) == 2


def test_onnx_export_failure_keeps_the_torch_path(trials, tmp_path, monkeypatch, caplog):
    import torch

    from pipelines.deep import make_deep_pipeline
    from pipelines.fastpath import compile_proba

    X, y = trials
    clf = make_deep_pipeline("EEGNet", sfreq=160.0, max_epochs=1, batch_size=16, seed=0).fit(X, y)
    mvp = make_deep_pipeline("MVPFormer", size="tiny", segment_len=80, sfreq=160.0, max_epochs=1, batch_size=16,
                             seed=0).fit(X, y)  # fmt: skip
    monkeypatch.setenv("BCI_CACHE", str(tmp_path))  # nothing cached: every compile exports

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::made_up")

    monkeypatch.setattr(torch.onnx, "export", broken)
    assert compile_proba(clf) is None
    assert "EEGNet: ONNX export failed (RuntimeError: unsupported operator aten::made_up); the torch path decides" in caplog.text
    stream = mvp.segment_stream(len(CHANNELS), 320, compile=True)
    assert stream.compiled is None and "MVPFormer streaming step: ONNX export failed (RuntimeError" in caplog.text
    for t in range(5):  # the eager step decides
        stream.push(X[0][:, (t % 4) * 80 : (t % 4 + 1) * 80])
    assert stream.proba().shape == (2,)


@pytest.mark.parametrize("channel_mode", ["joint", "independent"])
def test_mvpformer_onnx_step_equals_the_eager_stream(trials, channel_mode):
    """The live loop's MVPFormer step in ONNX Runtime (once the cache is full) gives the eager
    key/value-cached step's probabilities, segment after segment, across a reset."""
    import torch

    from bci.channels import ChannelSet
    from bci.model import TrainedModel
    from pipelines.deep import OnnxSegmentStep, SegmentStream, make_deep_pipeline

    X, y = trials
    torch.set_num_threads(1)
    clf = make_deep_pipeline("MVPFormer", size="tiny", segment_len=80, channel_mode=channel_mode, sfreq=160.0,
                             max_epochs=1, batch_size=16, seed=0).fit(X, y)  # fmt: skip
    model = TrainedModel(name="MVPFormer", estimator=clf, classes=["left_hand", "right_hand"],
                         input_channels=ChannelSet(CHANNELS), sfreq=160.0, window_s=2.0, hop_s=0.5, preprocessing={})  # fmt: skip
    model.prepare()  # the live loop's start: the step is exported for the model's channel count
    fast = model.segment_stream(len(CHANNELS))
    assert isinstance(fast.compiled, OnnxSegmentStep) and fast.context == 4
    assert model.segment_stream(len(CHANNELS)).compiled is fast.compiled  # kept for later streams
    assert model.segment_stream(5).compiled is None  # another channel count: not compiled, the eager step
    eager = SegmentStream(clf.module_, clf.scale_, len(CHANNELS), 320)
    signal = np.concatenate(list(X[:4]), axis=1)  # 8 s of real EEG, 16 segments
    for stream in (fast, eager):
        stream.push(signal[:, :80])
    fast.reset(), eager.reset()  # after a reset the cache fills again through the eager step
    for t in range(16):
        segment = signal[:, t * 80 : (t + 1) * 80]
        fast.push(segment), eager.push(segment)
        assert (fast._past is not None) == (t >= 3)
        np.testing.assert_allclose(fast.proba(), eager.proba(), rtol=0, atol=1e-5)


# ------------------------------------------------------ tangent space fast path
def _ts_pipelines():
    from pyriemann.estimation import Covariances
    from pyriemann.tangentspace import TangentSpace
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import SVC

    from pipelines.augmented import AugmentedCovariances

    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    return {
        "ACM+TS+SVM calibrated": CalibratedClassifierCV(
            make_pipeline(make_pipeline(AugmentedCovariances(order=2, lag=2), TangentSpace(), SVC(kernel="linear"))),
            cv=cv, ensemble=False),
        "Cov+TS+LR": make_pipeline(Covariances("oas"), TangentSpace(), LogisticRegression(max_iter=500)),
        "Cov+TS+LR calibrated": CalibratedClassifierCV(
            make_pipeline(Covariances("oas"), TangentSpace(), LogisticRegression(max_iter=500)), cv=cv, ensemble=False),
    }  # fmt: skip


@pytest.mark.parametrize("key", list(_ts_pipelines()))
def test_tangent_space_fast_path_equals_pipeline(trials, key):
    from pipelines.fastpath import compile_proba

    X, y = trials
    est = _ts_pipelines()[key].fit(X[::2], y[::2])
    fast = compile_proba(est)
    assert fast is not None
    held_out = X[1::2]
    ref = est.predict_proba(held_out)
    assert 0.05 < ref[:, 1].min() or ref[:, 1].max() < 0.95 or ref[:, 1].std() > 0.01  # not a saturated check
    np.testing.assert_allclose(fast(held_out), ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fast(held_out[:1]), ref[:1], rtol=1e-9, atol=1e-12)  # batch 1


def test_unsupported_pipelines_have_no_fast_path(trials):
    from pyriemann.classification import MDM
    from pyriemann.estimation import Covariances
    from pyriemann.tangentspace import TangentSpace
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import SVC

    from pipelines.fastpath import compile_proba

    X, y = trials
    for est in (make_pipeline(Covariances("oas"), TangentSpace(), SVC(kernel="rbf", probability=True)),
                make_pipeline(Covariances("oas"), MDM()),
                make_pipeline(Covariances("oas"), TangentSpace(metric="logeuclid"), SVC(kernel="linear", probability=True))):
        assert compile_proba(est.fit(X[:20], y[:20])) is None


def test_trained_model_uses_fast_path_and_recompiles_after_refit(trials):
    from pyriemann.estimation import Covariances
    from pyriemann.tangentspace import TangentSpace
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from bci.channels import ChannelSet
    from bci.model import TrainedModel

    X, y = trials
    est = make_pipeline(Covariances("oas"), TangentSpace(), LogisticRegression(max_iter=500)).fit(X[:20], y[:20])
    model = TrainedModel(name="ts", estimator=est, classes=["right_hand", "left_hand"],  # not the fitted order
                         input_channels=ChannelSet(CHANNELS), sfreq=160.0, window_s=2.0, hop_s=0.5,
                         preprocessing={"bandpass": [8, 30]})  # fmt: skip
    ref = est.predict_proba(X[20:])[:, ::-1]
    np.testing.assert_allclose(model.predict_proba(X[20:]), ref, rtol=1e-9, atol=1e-12)
    first = model._fast_proba()
    assert first is not None and model._fast_proba() is first
    est.fit(X[10:], y[10:])  # refit in place: the compiled copy is stale
    again = model._fast_proba()
    assert again is not None and again is not first
    np.testing.assert_allclose(model.predict_proba(X[:5]), est.predict_proba(X[:5])[:, ::-1], rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------- telemetry
def test_latency_stats_tail_percentiles():
    from realtime.telemetry import LatencyStats

    stats = LatencyStats()
    values = np.r_[np.full(9990, 0.005), np.linspace(0.02, 0.03, 10)]
    for v in values:
        stats.add(float(v))
    s = stats.summary("x")
    assert s["x_p99_ms"] == pytest.approx(5.0, rel=0.02)
    assert s["x_p999_ms"] == pytest.approx(np.percentile(values, 99.9, method="higher") * 1e3, rel=0.02)
    assert s["x_max_ms"] == pytest.approx(30.0)
