"""The clinician-facing seizure-monitoring dashboard (``bci dashboard``), Qt + pyqtgraph.

- :mod:`gui.app` - configuration (``configs/dashboard.yaml``), start-up, headless runs and
  screenshots (:func:`gui.app.run_dashboard`, which ``bci dashboard`` calls);
- :mod:`gui.window` - the main window: alarm banner, traces, seizure panel, event list,
  status bar, one frame timer;
- :mod:`gui.traces` - the EEG trace view (one decimated curve per page, sensitivity,
  scale bar, annotations, review, channel groups);
- :mod:`gui.display` - montages and display filters (``bci.preprocess``), the review
  buffer, min/max decimation;
- :mod:`gui.seizure_panel` - probability trend, density spectral array, channel contribution;
- :mod:`gui.alarms` - the alarm rule and the monitor that logs alarms from the decoder thread;
- :mod:`gui.eventlog` - the SQLite (WAL) event log;
- :mod:`gui.feed`, :mod:`gui.decoding` - adapters over ``realtime/`` (inlet, replay, decoder);
- :mod:`gui.cues` - the cue screens and their player (the paradigm itself: :mod:`bci.paradigm`);
- :mod:`gui.calibration`, :mod:`gui.feedback` - the sessions of ``bci calibrate`` and
  ``bci stream --feedback``.

Nothing here is imported by ``bci`` at start-up: Qt loads only when the dashboard runs.
"""
