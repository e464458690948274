"""Live decoding over Lab Streaming Layer: inlet, ring buffer, decoder loop, replay, telemetry.

- :class:`realtime.inlet.Inlet` - resolve a stream, read its channels, pull into a ring buffer;
- :class:`realtime.decoder.Decoder` - preprocessing, model, smoothing, ``bci-out`` outlet, faults;
- :class:`realtime.replay.Replay` - any recording as an LSL stream (``bci replay``);
- :class:`realtime.recorder.Recorder` - a live stream (+ markers) to FIF (``bci record``), in
  the file format of :mod:`realtime.recording` (segments, assembly, recovery; no LSL);
- :mod:`realtime.markers` - marker streams: the cues a session sends, the markers a recording takes;
- :mod:`realtime.probabilities` - a decoder's probabilities for the feedback view (callback or ``bci-out``);
- :mod:`realtime.telemetry` - latency percentiles in constant memory.

Beside them, the two process-wide set-up steps every live command (replay, stream, record,
calibrate) takes first: :func:`quiet_liblsl` and :func:`stop_signals_interrupt`.
"""

import signal


def quiet_liblsl(level: int = -3) -> None:
    """Keep liblsl's own log (e.g. "Stream transmission broke off") off stderr.

    Must run before the first LSL call of the process; later calls have no effect.
    ``level`` follows loguru: -3 fatal only, -2 errors, -1 warnings, 0 info.
    """
    import pylsl  # here, not at the top: realtime.recording (no LSL) is importable without liblsl

    try:
        pylsl.set_config_content(f"[log]\nlevel = {int(level)}\n")
    except Exception:  # noqa: BLE001 - liblsl already configured
        pass


def stop_signals_interrupt() -> None:
    """SIGTERM (a service manager, ``kill``) stops as cleanly as Ctrl-C, and Ctrl-C works even
    when the process was started in the background (which starts it with SIGINT ignored)."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, interrupt)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # inherited as ignored when started in the background
    except ValueError:  # not the main thread (e.g. called from a test thread)
        pass
