"""The evaluation harness on small real subsets, resume, and bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from bci.config import Config, validate
from bci.errors import ConfigError, DataError
from bci.evaluate import GroupHoldout, chosen_params, evaluate, make_splits


def _cfg(tmp_path, **overrides):
    data = {
        "name": "test",
        "seed": 7,
        "datasets": [{"name": "PhysionetMI", "subjects": [1], "params": {"imagined": True}}],
        "paradigm": {"name": "LeftRightImagery", "params": {"fmin": 8, "fmax": 30}},
        "evaluation": {"kind": "cross_run"},
        "pipelines": ["moabb_csp_lda", "moabb_mdm"],
    }
    data.update(overrides)
    return validate(Config(data, tmp_path / "cfg.yaml"))


@pytest.mark.slow
def test_cross_run_on_physionet_writes_results_and_resumes(tmp_path, data_dir):
    out = tmp_path / "out"
    frame = evaluate(_cfg(tmp_path), out, progress=False)
    assert sorted(frame.pipeline) == ["moabb:CSP+LDA", "moabb:MDM"]
    assert set(frame.session) == {"run 2"}  # trained on runs 4 and 8, tested on run 12
    assert (frame.samples == 30).all() and (frame.n_test == 15).all()
    assert frame.score.between(0.5, 1.0).all()  # subject 1 is well above chance
    assert (frame.scoring == "roc_auc").all() and (frame.seed == 7).all()
    for name in ("results.csv", "summary.md", "scores.png", "comparison.png"):
        assert (out / name).stat().st_size > 0
    summary = (out / "summary.md").read_text()
    assert "moabb:MDM" in summary and "Best baseline" in summary
    before = (out / "results.csv").read_text()
    again = evaluate(_cfg(tmp_path), out, progress=False)  # resume: nothing recomputed
    assert (out / "results.csv").read_text() == before and len(again) == 2


@pytest.mark.slow
def test_cross_session_holdout_on_bci_iv_2b(tmp_path, data_dir):
    cfg = _cfg(
        tmp_path,
        datasets=[{"name": "LocalEpochs", "subjects": [1], "params": {"path": str(data_dir / "bnci2014_004")}}],
        evaluation={"kind": "cross_session", "params": {"train_sessions": [1, 2, 3], "test_sessions": [4, 5]}, "scoring": "accuracy"},
        pipelines=["moabb_mdm", "mdm_recentered"],
    )
    frame = evaluate(cfg, tmp_path / "o", progress=False)
    # one fit, each test session scored on its own (MOABB's per-session scores)
    assert frame.session.astype(str).tolist() == ["4", "5", "4", "5"]
    assert (frame.samples == 360).all() and (frame.n_test == 120).all()
    assert np.allclose(frame.score, frame.accuracy) and frame.score.mean() > 0.6
    assert frame.groupby("pipeline").fit_time.nunique().eq(1).all()
    assert (tmp_path / "o" / "sessions.png").stat().st_size > 0
    # test-time re-centering sees one session at a time: session 4 alone gives its row
    from bci.evaluate import SubjectData, _group_fit_params, _load, plan
    from pipelines.registry import fill_unset

    paradigm, pipelines, [(dataset, _)] = plan(cfg)
    data = SubjectData.prepare(paradigm, dataset, *_load(paradigm, dataset, [1]), "cross_session",
                               cfg["evaluation"]["params"], cfg["seed"])  # fmt: skip
    (split,) = data.splits
    est = fill_unset(pipelines["MDM (re-centred)"], seed=cfg["seed"], sfreq=data.sfreq)
    est.fit(data.X[split.train], data.y[split.train], **_group_fit_params(est, data.groups[split.train]))
    four = split.scored()[0][1]
    alone = (est.predict(data.X[four]) == data.y[four]).mean()
    assert alone == pytest.approx(frame.query("pipeline == 'MDM (re-centred)' and session == 4").score.item())


def test_group_holdout_defaults_to_last_group():
    groups = np.array(["0", "0", "1", "1", "2", "2"])
    (train, test), = GroupHoldout().split(np.zeros(6), None, groups)
    assert train.tolist() == [0, 1, 2, 3] and test.tolist() == [4, 5]
    with pytest.raises(DataError, match=r"groups \['9'\]"):
        next(GroupHoldout(test=[9]).split(np.zeros(6), None, groups))


def test_cross_session_needs_two_sessions():
    meta = pd.DataFrame({"subject": [1] * 4, "session": ["0"] * 4, "run": ["0", "0", "1", "1"]})
    with pytest.raises(DataError, match="at least two sessions"):
        make_splits("cross_session", {}, np.array([0, 1, 0, 1]), meta, 0)


def test_unknown_dataset_and_pipeline_fail_before_work(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset 'PhysionetXX'"):
        evaluate(_cfg(tmp_path, datasets=[{"name": "PhysionetXX", "subjects": [1]}]), tmp_path / "o", progress=False)
    with pytest.raises(ConfigError, match="unknown pipeline 'nope'"):
        evaluate(_cfg(tmp_path, pipelines=["nope"]), tmp_path / "o", progress=False)


def test_cross_session_on_single_session_dataset_refused(tmp_path):
    with pytest.raises(DataError, match="cross-session evaluation is impossible"):
        evaluate(_cfg(tmp_path, evaluation={"kind": "cross_session"}), tmp_path / "o", progress=False)


def test_subject_not_available_offline(tmp_path, data_dir):
    with pytest.raises(DataError, match="subject 11 is not in the local cache"):
        evaluate(_cfg(tmp_path, datasets=[{"name": "PhysionetMI", "subjects": [11]}]), tmp_path / "o", progress=False)


def test_chosen_params_reads_grid_winners():
    from sklearn.datasets import make_classification
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import SVC

    X, y = make_classification(60, 5, random_state=0)
    est = GridSearchCV(make_pipeline(SVC()), {"svc__C": [0.1, 10]}, cv=3).fit(X, y)
    assert json.loads(json.dumps(chosen_params(est)))["C"] in (0.1, 10)


def test_chosen_params_short_names_when_paths_agree():
    from types import SimpleNamespace

    inner = SimpleNamespace(order_=4, lag_=2)
    search = SimpleNamespace(best_params_={"order": 4, "lag": 2, "C": 1.0},
                             best_estimator_=SimpleNamespace(steps=[("acm", inner)]))
    assert chosen_params(SimpleNamespace(steps=[("grid", search)])) == {"order": 4, "lag": 2, "C": 1.0}
    inner.lag_ = 3  # two paths disagree: keep both qualified, the rest short
    assert chosen_params(SimpleNamespace(steps=[("grid", search)])) == {
        "order": 4, "C": 1.0, "grid__lag": 2, "grid__acm__lag": 3}


@pytest.mark.slow
def test_scores_equal_moabbs_own_cross_session_evaluation(tmp_path, data_dir):
    """Leave-one-session-out on BCI IV 2b: our cells reproduce MOABB's evaluation exactly."""
    from moabb.evaluations import CrossSessionEvaluation
    from moabb.paradigms import LeftRightImagery
    from pipelines.registry import load_pipelines

    from bci.datasets import get_dataset

    path = str(data_dir / "bnci2014_004")
    cfg = _cfg(
        tmp_path,
        datasets=[{"name": "LocalEpochs", "subjects": [1], "params": {"path": path}}],
        evaluation={"kind": "cross_session"},
        pipelines=["moabb_mdm"],
    )
    ours = evaluate(cfg, tmp_path / "o", progress=False).sort_values("session")
    dataset = get_dataset("LocalEpochs", path=path)
    dataset.subject_list = [1]
    moabb = CrossSessionEvaluation(
        paradigm=LeftRightImagery(fmin=8, fmax=30), datasets=[dataset], overwrite=True,
        hdf5_path=str(tmp_path / "moabb"), suffix="t",
    ).process(load_pipelines(["moabb_mdm"])).sort_values("session")
    assert ours.session.astype(str).tolist() == moabb.session.astype(str).tolist() == ["1", "2", "3", "4", "5"]
    assert np.allclose(ours.score.to_numpy(), moabb.score.to_numpy(), atol=1e-12)


def test_summary_of_a_partial_run(tmp_path):
    """An interrupted run leaves pipelines with fewer subjects: statistics use the subjects
    both pipelines share, the baseline is one run on every subject, long names are shortened."""
    from bci.report import summary_markdown

    rng = np.random.default_rng(0)
    rows = [
        {"dataset": "D", "subject": s, "session": "0", "pipeline": p, "score": sc, "accuracy": sc,
         "fit_time": 1.0, "predict_time": 0.1, "evaluation": "cross_session", "scoring": "accuracy",
         "seed": 42, "params": json.dumps({"grid__order": 3, "grid__acm__order": 3}) if p == "ACM" else "{}"}
        for s in range(1, 7)
        for p, sc in (("ACM", 0.8 + 0.01 * rng.random()), ("moabb:TS", 0.6 + 0.01 * rng.random()),
                      ("braindecode:Deep", 0.95))
        if p != "braindecode:Deep" or s == 1
    ]
    rows.insert(1, {**rows[0], "session": "1"})  # a second test session of the same fit
    text = summary_markdown(pd.DataFrame(rows), "partial")
    assert text.count("s1: ") == 1  # its hyper-parameters listed once
    assert "Best baseline: **moabb:TS**" in text
    acm = next(line for line in text.splitlines() if line.startswith("| ACM |"))
    assert acm.split("|")[6].strip() == "6" and float(acm.split("|")[7]) < 0.05
    assert '{"order": 3}' in text


def test_param_grid_searched_as_moabb_does():
    """A MOABB-format param_grid gets MOABB's inner search: 3 shuffled stratified folds seeded
    by the evaluation, and the evaluation's scoring (so does our ACM grid)."""
    from pipelines.registry import fill_unset
    from pipelines.registry import load_pipelines

    pipes = load_pipelines(["moabb_acm_grid", "acm_ts_svm_grid"])
    theirs = fill_unset(pipes["moabb:ACM+TS+SVM"], seed=42, sfreq=160.0, scoring="roc_auc")
    assert (theirs.cv.n_splits, theirs.cv.shuffle, theirs.cv.random_state, theirs.scoring) == (3, True, 42, "roc_auc")
    ours = fill_unset(pipes["ACM+TS+SVM"], seed=42, sfreq=160.0, scoring="accuracy")
    search = {k.rsplit("__", 1)[-1]: v for k, v in ours.get_params().items() if "augmentedgridsearch__" in k}
    assert [search[k] for k in ("cv", "random_state", "scoring", "estimator", "reference")] == [3, 42, "accuracy", "cov", "fold"]


def test_results_file_resumes_by_cell_key_and_removes_cells(tmp_path):
    """The one results writer: cells keyed by any columns, rows of a finished cell written once,
    cells removed to be computed again, a file of another configuration cleared."""
    from bci.report import ResultsFile

    columns = ["task", "pipeline", "fold", "proba"]
    path = tmp_path / "segments.csv"
    f = ResultsFile(path, columns, key=("task", "pipeline", "fold"))
    f.append([{"task": "A-E", "pipeline": "BP", "fold": 1, "proba": 0.1}, {"task": "A-E", "pipeline": "BP", "fold": 1, "proba": 0.9}])
    f.append([{"task": "A-E", "pipeline": "BP", "fold": 1, "proba": 0.5}])  # a retried cell: dropped
    f.append([{"task": "A-E", "pipeline": "BP", "fold": 2, "proba": 0.7}])
    again = ResultsFile(path, columns, key=("task", "pipeline", "fold"))  # a re-run knows both cells
    assert again.finished("A-E", "BP", 1) and again.finished("A-E", "BP", 2) and not again.finished("A-E", "BP", 3)
    assert again.read().proba.tolist() == [0.1, 0.9, 0.7]
    again.remove(fold=1)
    assert not again.finished("A-E", "BP", 1) and again.read().proba.tolist() == [0.7]
    again.clear()
    assert not path.exists() and not again.finished("A-E", "BP", 2)


def _two_subjects_meta():
    sessions = ["1", "1", "2", "2", "3", "3"]
    return pd.DataFrame({"subject": [1] * 6 + [2] * 6, "session": sessions * 2, "run": ["0"] * 12})


def test_transfer_adds_the_sources_to_every_training_set():
    meta, y = _two_subjects_meta(), np.array([0, 1] * 6)
    params = {"train_sessions": [1, 2], "test_sessions": [3], "transfer": {"subjects": "others"}}
    (split,) = make_splits("cross_session", params, y, meta, 0, target=1)
    assert split.subject == 1 and split.session == "3"
    assert split.test.tolist() == [4, 5]  # the target's session 3 only
    assert sorted(split.train.tolist()) == [0, 1, 2, 3, 6, 7, 8, 9, 10, 11]  # own 1-2 + all of subject 2
    assert split.transfer == {"transfer_from": [2], "own_trials": 4}
    # a new user with little calibration: the first N own trials, in recorded order
    params["transfer"]["calibration_trials"] = 1
    (split,) = make_splits("cross_session", params, y, meta, 0, target=1)
    assert sorted(split.train.tolist()) == [0, 6, 7, 8, 9, 10, 11] and split.transfer["own_trials"] == 1
    params["transfer"]["calibration_trials"] = 0
    (split,) = make_splits("cross_session", params, y, meta, 0, target=2)
    assert sorted(split.train.tolist()) == [0, 1, 2, 3, 4, 5] and split.test.tolist() == [10, 11]


def test_transfer_settings_are_checked():
    from bci.evaluate import Transfer

    meta, y = _two_subjects_meta(), np.array([0, 1] * 6)
    with pytest.raises(ConfigError, match="applies to kind"):
        make_splits("within_session", {"transfer": {}}, y, meta, 0, target=1)
    with pytest.raises(ConfigError, match=r"transfer.calibration_trials: expected >= 0"):
        make_splits("cross_session", {"transfer": {"calibration_trials": -1}}, y, meta, 0, target=1)
    with pytest.raises(ConfigError, match=r"transfer.subjct: unknown key"):
        make_splits("cross_session", {"transfer": {"subjct": "others"}}, y, meta, 0, target=1)
    with pytest.raises(ConfigError, match=r"transfer.subjects: expected 'others' or a list"):
        make_splits("cross_session", {"transfer": {"subjects": "all"}}, y, meta, 0, target=1)
    with pytest.raises(DataError, match="no other subject"):
        Transfer().sources(1, [1])
    assert Transfer(subjects=[1, 3]).sources(1, [1, 2]) == [3]


@pytest.mark.slow
def test_transfer_from_other_subjects_on_bci_iv_2b(tmp_path, data_dir):
    """Subject 1 learns from its sessions 1-3 and all of subject 4's, each aligned on its own."""
    ev = {"kind": "cross_session", "scoring": "accuracy",
          "params": {"train_sessions": [1, 2, 3], "test_sessions": [4, 5], "transfer": {"subjects": [4]}}}  # fmt: skip
    cfg = _cfg(tmp_path, datasets=[{"name": "LocalEpochs", "subjects": [1], "params": {"path": str(data_dir / "bnci2014_004")}}],
               evaluation=ev, pipelines=["mdm_recentered"])  # fmt: skip
    frame = evaluate(cfg, tmp_path / "o", progress=False)
    assert frame.session.astype(str).tolist() == ["4", "5"] and (frame.subject == 1).all()
    assert (frame.samples == 360 + 600).all() and (frame.n_test == 120).all()
    params = json.loads(frame.params[0])
    assert params["transfer_from"] == [4] and params["own_trials"] == 360
    assert frame.score.mean() > 0.65  # subject 1 stays well above chance
    # no calibration at all: subject 4's sessions alone, test sessions re-centred on themselves
    ev["params"]["transfer"]["calibration_trials"] = 0
    frame = evaluate(_cfg(tmp_path, datasets=cfg["datasets"], evaluation=ev, pipelines=["mdm_recentered"]), tmp_path / "z", progress=False)
    assert (frame.samples == 600).all() and json.loads(frame.params[0])["own_trials"] == 0
    assert frame.score.mean() > 0.65  # 0.746: another subject's sessions, re-centred, carry over
