"""Bodies of ``bci replay`` and ``bci stream`` (imported lazily by :mod:`bci.cli`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bci.errors import BCIError

from . import quiet_liblsl, stop_signals_interrupt


def replay(args) -> int:
    """``bci replay FILE [--name NAME] [--speed X] [--loop]``: play until the end or Ctrl-C."""
    quiet_liblsl()
    stop_signals_interrupt()
    from .replay import Replay

    player = Replay(args.file, args.name, speed=args.speed, loop=args.loop)
    rec = player.recording
    markers = f" + markers {player.name + '-markers'!r} ({len(player._marker_idx)} annotations)" if player.with_markers else ""
    print(
        f"replaying {Path(args.file).name}: {len(rec.channels)} ch @ {rec.sfreq:g} Hz, {rec.duration:.1f} s"
        f" at {player.speed:g}x{' (looping)' if player.loop else ''} as LSL stream {player.name!r}"
        f" (source_id {player.source_id}){markers}; Ctrl-C stops",
        flush=True,
    )
    player.start()
    try:
        while not player.wait(0.5):
            pass
        time.sleep(1.0)  # let inlets drain the last chunk before the outlet closes
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr, flush=True)
    finally:
        player.stop()
    print(f"pushed {player.n_pushed} samples, {player.n_markers} markers", flush=True)
    return 0


def stream(args) -> int:
    """``bci stream --model MODEL_DIR [--source NAME] [--feedback [--paradigm CONFIG]]``: decode live until Ctrl-C."""
    if getattr(args, "paradigm", None) and not getattr(args, "feedback", False):
        raise BCIError("--paradigm runs its cues in the feedback view: add --feedback")
    quiet_liblsl()
    stop_signals_interrupt()
    from .decoder import Decoder, DecoderConfig

    config = DecoderConfig.load(getattr(args, "config", None))
    decoder = Decoder(args.model, args.source, config)
    decoder.open()
    m = decoder.model
    print(
        f"decoding {decoder.inlet.describe()} with {m.name} ({', '.join(m.classes)}; window {m.window_s:g} s, "
        f"hop {decoder.hop_s * 1e3:g} ms, {decoder.summary()['path']}); {decoder.mapping.report()}",
        flush=True,
    )
    print(f"publishing on LSL {config.outlet_name!r} (probabilities + source_time) and {config.marker_name!r}; Ctrl-C stops",
          flush=True)
    tty = sys.stdout.isatty()
    decoder.start()
    try:
        if getattr(args, "feedback", False):  # the feedback view (gui/feedback.py) until closed or Ctrl-C
            from gui.feedback import stream_feedback

            stream_feedback(decoder, paradigm=getattr(args, "paradigm", None))
        else:
            while True:
                time.sleep(1.0)
                if decoder.error is not None:
                    break
                line = decoder.status_line()
                print(("\r\033[K" + line) if tty else line, end="" if tty else "\n", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        if tty:
            print()
        decoder.stop()
    s = decoder.summary()
    print(
        f"stopped: {s['decisions']} decisions, latency p50 {s['latency_p50_ms']:.2f} ms p95 {s['latency_p95_ms']:.2f} ms "
        f"p99 {s['latency_p99_ms']:.2f} ms max {s['latency_max_ms']:.2f} ms; dropped windows {s['dropped_windows']}, "
        f"dropped samples {s['dropped_samples']}, withheld {s['withheld']}, stream losses {s['losses']}",
        flush=True,
    )
    return 0
