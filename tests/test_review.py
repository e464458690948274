"""Review of a recording in the dashboard (``bci dashboard --review FILE``), offscreen.

Covers: the reviewer's marks without Qt (open/close intervals, clipping, errors, event
stepping, events.tsv in SzCORE + BIDS columns read back by pandas, MNE-BIDS and
bci.szcore), the review window on the Malow recording (whole recording loaded, pages,
jumps, a seizure onset/offset and an artefact marked, logged to SQLite, exported,
drawn), keyboard shortcuts, and the command line (screenshot, no patient identifiers,
bad input).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import sqlite3

import numpy as np
import pandas as pd
import pytest
from mne_bids import events_file_to_annotation_kwargs

from bci.errors import DataError
from bci.szcore import COLUMNS, read_seizures_tsv

pytestmark = pytest.mark.timeout(120)

BIDS_COLUMNS = ["onset", "duration", "trial_type"]


@pytest.fixture(scope="module")
def qapp():
    from gui.app import ensure_qapp

    return ensure_qapp(offscreen=True)


def _check_events_tsv(path, expected: list[tuple[float, float, str]]) -> None:
    """``path`` read back three ways: pandas, MNE-BIDS, bci.szcore."""
    frame = pd.read_csv(path, sep="\t", keep_default_na=False)
    assert set(BIDS_COLUMNS + COLUMNS) <= set(frame.columns)
    assert list(zip(frame.onset, frame.duration, frame.trial_type)) == expected
    assert list(frame.eventType) == list(frame.trial_type)
    assert set(frame.confidence) == {"n/a"} and set(frame.dateTime) == {"1970-01-01 00:00:00"}
    kwargs = events_file_to_annotation_kwargs(path)
    assert list(kwargs["onset"]) == [o for o, _, _ in expected]
    assert list(kwargs["description"]) == [t for _, _, t in expected]
    assert read_seizures_tsv(path) == [(o, o + d) for o, d, t in expected if t == "sz"]


# ------------------------------------------------------------------ without Qt
def test_review_annotations_open_close_step_and_export(tmp_path):
    from gui.annotations import ReviewAnnotations, next_event, previous_event

    ann = ReviewAnnotations(500.0)
    assert ann.begin("seizure", 350.0) == 350.0
    assert ann.labels() == [(350.0, "Seizure onset (open)", "seizure")]
    sz = ann.end("seizure", 395.5)
    assert (sz.onset_s, sz.duration_s, sz.type) == (350.0, 45.5, "seizure")
    assert sz.details() == {"onset_s": 350.0, "duration_s": 45.5, "type": "seizure"}
    art = ann.add("artefact", 498.0, 520.0)  # clipped to the recording
    assert (art.onset_s, art.end_s) == (498.0, 500.0)
    ann.begin("artefact", 12.0)
    ann.end("artefact", 10.0)  # either order
    assert [(m.onset_s, m.end_s, m.type) for m in ann.marks] == [(10.0, 12.0, "artefact"), (350.0, 395.5, "seizure"), (498.0, 500.0, "artefact")]
    with pytest.raises(DataError, match="no seizure onset marked yet"):
        ann.end("seizure", 400.0)
    with pytest.raises(DataError, match="unknown annotation type 'spike'"):
        ann.begin("spike", 1.0)

    times = ann.times()
    assert times == [10.0, 12.0, 350.0, 395.5, 498.0, 500.0]
    assert next_event(times, 12.0) == 350.0 and next_event(times, 500.0) is None
    assert previous_event(times, 350.0) == 12.0 and previous_event(times, 10.0) is None

    path = ann.write_tsv(tmp_path / "sub-x_events.tsv")
    _check_events_tsv(path, [(10.0, 2.0, "artf"), (350.0, 45.5, "sz"), (498.0, 2.0, "artf")])


# ------------------------------------------------------------------ the window
def _reddish(window, t_s: float) -> float:
    """Median red-over-green of the trace view's column at stream time ``t_s``."""
    from PySide6 import QtCore

    plot = window.traces.plot
    x = plot.mapFromScene(window.traces.vb.mapViewToScene(QtCore.QPointF(t_s, -10.0))).x()
    img = plot.grab().toImage()
    col = [QtCore.QPoint(x, y) for y in range(10, img.height() - 30, 3)]
    return float(np.median([img.pixelColor(p).red() - img.pixelColor(p).green() for p in col]))


def test_review_malow_marks_seizure_logs_and_exports_events_tsv(qapp, data_dir, tmp_path):
    from gui.app import Session
    from gui.eventlog import EventLog

    db = tmp_path / "events.sqlite"
    session = Session(review=data_dir / "seizure" / "malow", events=db)
    try:
        w = session.window
        assert w.traces.end_index == 50_000  # the whole recording, not a live buffer
        assert w.traces.page_window() == (0.0, 10.0) and not w.traces.live
        w.page(1)
        assert w.traces.page_window() == (10.0, 20.0)
        w.page(-5)
        assert w.traces.page_window() == (0.0, 10.0)

        w.show_time(345.0)
        t0, t1 = w.traces.page_window()
        assert t0 < 345.0 < t1
        w.set_cursor(350.0)
        assert w.begin_mark("seizure") == 350.0  # at the cursor
        assert w.end_mark("artefact") is None  # none open: a message, nothing logged
        mark = w.end_mark("seizure", 395.0)
        assert (mark.onset_s, mark.duration_s) == (350.0, 45.0)
        w.begin_mark("artefact", 341.0)
        w.end_mark("artefact", 343.5)

        w.set_cursor(0.0)
        assert w.jump(1) == 341.0 and w.jump(1) == 343.5 and w.jump(1) == 350.0
        assert w.jump(-1) == 343.5 and w.cursor_s == 343.5
        assert any(text == "Seizure onset" for _, text, _ in w.traces.annotations)

        w.show()
        w.show_time(350.0)
        qapp.processEvents()
        w.traces.refresh()
        assert _reddish(w, 352.0) > 15 > _reddish(w, 347.0)  # the seizure interval is shaded
        png = w.grab_png(tmp_path / "review.png")
        assert png.stat().st_size > 10_000

        out = w.export_events(tmp_path / "sub-malow_task-review_events.tsv")
        _check_events_tsv(out, [(341.0, 2.5, "artf"), (350.0, 45.0, "sz")])
    finally:
        session.close()
    with EventLog(db) as log:
        logged = [e.details for e in log.events("annotation")]
        kinds = [e.kind for e in log.events()]
    assert logged == [{"onset_s": 350.0, "duration_s": 45.0, "type": "seizure"},
                      {"onset_s": 341.0, "duration_s": 2.5, "type": "artefact"}]  # fmt: skip
    assert kinds[0] == "session_start" and kinds[-1] == "session_end"


def test_review_cli_screenshot_no_identifiers_and_bad_input(qapp, tmp_path):
    import datetime as dt

    import mne
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    from bci.cli import main
    from gui.app import Session
    from gui.eventlog import EventLog

    # a FIF whose header names the patient and the day: none of it may reach an export
    rng = np.random.default_rng(0)
    info = mne.create_info(["Fp1", "F7", "T7", "P7", "O1", "Fp2", "F8", "T8", "P8", "O2"], 128.0, "eeg")
    raw = mne.io.RawArray(rng.standard_normal((10, 128 * 30)) * 20e-6, info, verbose="error")
    raw.info["subject_info"] = {"first_name": "Janeth", "last_name": "Doeberg", "his_id": "MRN-8675309"}
    raw.set_meas_date(dt.datetime(2021, 6, 7, 8, 9, 10, tzinfo=dt.timezone.utc))
    raw.set_annotations(mne.Annotations([3.0], [0.0], ["spike"], orig_time=raw.info["meas_date"]))
    fif = tmp_path / "session_raw.fif"
    raw.save(fif, verbose="error")

    png, db = tmp_path / "review.png", tmp_path / "e.sqlite"
    assert main(["dashboard", "--review", str(fif), "--seconds", "0.5", "--screenshot", str(png), "--events", str(db)]) == 0
    assert png.stat().st_size > 10_000

    session = Session(review=fif, events=db)
    try:
        w = session.window
        assert (3.0, "spike", "annotation") in w.traces.annotations  # the recording's own annotation
        assert w.jump(1) == 3.0
        w.show()
        w.activateWindow()
        qapp.processEvents()
        QTest.keyClick(w.traces, Qt.Key_O)  # seizure onset at the cursor
        QTest.keyClick(w.traces, Qt.Key_PageDown)  # the cursor is now off the page: its middle
        QTest.keyClick(w.traces, Qt.Key_O, Qt.ShiftModifier)  # seizure offset
        assert w.traces.page_window() == (10.0, 20.0)
        tsv = w.export_events(tmp_path / "events.tsv")
        _check_events_tsv(tsv, [(3.0, 12.0, "sz")])
    finally:
        session.close()
    csv = tmp_path / "e.csv"
    with EventLog(db) as log:
        log.export_csv(csv)
    dump = "\n".join(sqlite3.connect(db).iterdump()) + csv.read_text() + tsv.read_text()
    for secret in ("Janeth", "Doeberg", "8675309", "2021", "session_raw"):
        assert secret not in dump

    # bad input: one line, exit code 2
    assert main(["dashboard", "--review", str(tmp_path / "missing.edf"), "--seconds", "1", "--events", str(db)]) == 2
    assert main(["dashboard", "--review", str(fif), "--model", str(tmp_path), "--seconds", "1", "--events", str(db)]) == 2
