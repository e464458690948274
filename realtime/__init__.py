"""Live decoding over Lab Streaming Layer: inlet, ring buffer, decoder loop, replay, telemetry.

- :class:`realtime.inlet.Inlet` - resolve a stream, read its channels, pull into a ring buffer;
- :class:`realtime.decoder.Decoder` - preprocessing, model, smoothing, ``bci-out`` outlet, faults;
- :class:`realtime.replay.Replay` - any recording as an LSL stream (``bci replay``);
- :mod:`realtime.telemetry` - latency percentiles in constant memory.
"""


def quiet_liblsl(level: int = -3) -> None:
    """Keep liblsl's own log (e.g. "Stream transmission broke off") off stderr.

    Must run before the first LSL call of the process; later calls have no effect.
    ``level`` follows loguru: -3 fatal only, -2 errors, -1 warnings, 0 info.
    """
    import pylsl

    try:
        pylsl.set_config_content(f"[log]\nlevel = {int(level)}\n")
    except Exception:  # noqa: BLE001 - liblsl already configured
        pass
