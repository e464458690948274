"""The seizure evaluation's report: segment and event tables, the detector grid, the trend plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..alarm import TARGET_FP_PER_24H, AlarmRule, detect_alarms
from ..environment import machine_description
from ..szcore import parameters_text, pooled_scores, score_recording
from .metrics import alarm_events, latency, segment_metrics


def plot_trend(path: Path, traces: dict, events: dict, detector: AlarmRule) -> None:
    """Probability over the recording per pipeline (combined channels; MVPFormer joint
    dashed), threshold, onset, alarms; bottom: per-channel probabilities of the first."""
    import matplotlib  # only when plotting: the Agg backend, chosen before pyplot loads (never in the dashboard)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    combine = str(events.get("combine", "top3"))
    names = list(dict.fromkeys(n for n, _ in traces))
    fig, axes = plt.subplots(len(names) + 1, 1, figsize=(10, 2.2 * (len(names) + 1) + 0.6), sharex=True)
    onset = float(events["onset_s"])
    for ax, name in zip(axes, names):
        t = traces[(name, combine)]
        ax.plot(t["times"], t["proba"], lw=0.6, alpha=0.5, color="C0", label=f"channels {combine}")
        ax.plot(t["times"], t["smooth"], lw=1.6, color="C0", label=f"smoothed {detector.smoothing_s:g} s")
        if (name, "joint") in traces:
            j = traces[(name, "joint")]
            ax.plot(j["times"], j["smooth"], lw=1.2, ls="--", color="C2", label="joint 21-channel (smoothed)")
        ax.axhline(detector.threshold, color="k", lw=0.8, ls=":", label="threshold")
        ax.axvline(onset, color="C3", lw=1.5, label=f"onset {onset:g} s")
        for a in t["alarms"]:
            ax.axvline(a["raised_s"], color="C1", lw=1.0, ls="--")
            ax.plot([a["raised_s"]], [1.02], marker="v", color="C1", clip_on=False)
        ax.set_ylim(-0.02, 1.05)
        ax.set_ylabel("P(seizure)")
        ax.set_title(f"{name}: alarms (orange) after {detector.duration_s:g} s above threshold", fontsize=9)
        ax.legend(loc="upper left", fontsize=7, ncol=3)
    t = traces[(names[0], combine)]
    ax = axes[-1]
    mesh = ax.pcolormesh(t["times"], np.arange(len(t["channels"])), t["per_channel"].T, vmin=0, vmax=1, shading="nearest", cmap="magma")
    ax.set_yticks(np.arange(len(t["channels"])), t["channels"], fontsize=6)
    ax.axvline(onset, color="C3", lw=1.5)
    ax.set_title(f"{names[0]}: per-channel P(seizure)", fontsize=9)
    ax.set_xlabel("time (s, decision at the end of each window)")
    fig.colorbar(mesh, ax=axes, fraction=0.02, pad=0.01)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(mean, std=None, digits=3):
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return "n/a"
    return f"{mean:.{digits}f}" if std is None or np.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def segment_table(frame, seg_frame) -> list[str]:
    """Markdown rows: per task and pipeline, fold mean ± std and pooled out-of-fold metrics."""
    lines = []
    seg = frame[frame.session == "segments"]
    for dataset, d in seg.groupby("dataset", sort=False):
        task = dataset.split(" ", 1)[1]
        lines += ["", f"### {dataset} (segment-grouped {d.subject.nunique()}-fold CV)", ""]
        lines.append("| pipeline | accuracy | sensitivity | specificity | ROC-AUC | kappa | pooled acc | pooled AUC | window acc | fit s/fold |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        order = d.groupby("pipeline").accuracy.mean().sort_values(ascending=False).index
        for name in order:
            r = d[d.pipeline == name]
            s = seg_frame[(seg_frame.task == task) & (seg_frame.pipeline == name)]
            pooled = segment_metrics(s.label.to_numpy(), s.proba.to_numpy()) if len(s) else {}
            cells = [_fmt(r[m].mean(), r[m].std()) for m in ("accuracy", "sensitivity", "specificity", "roc_auc", "kappa")]
            lines.append(
                f"| {name} | " + " | ".join(cells) + f" | {_fmt(pooled.get('accuracy'))} | {_fmt(pooled.get('roc_auc'))} | "
                f"{_fmt(r.window_accuracy.mean())} | {r.fit_time.mean():.1f} |"
            )
    return lines


def _rate(scores) -> str:
    """FP/24 h with the hours it was measured on."""
    return f"{_fmt(scores['event_fp_per_24h'], digits=1)} ({scores['hours']:.2f} h)"


def event_table(frame, target_latency: float = 20.0, target_fa: int = 1) -> list[str]:
    """Markdown: SzCORE scores per continuous recording, pipeline and channel combination,
    then pooled over the recordings (counts and hours summed)."""
    ev = frame[frame.session == "events"]
    if ev.empty:
        return []
    lines = []
    for (dataset, recording), d in ev.groupby(["dataset", "recording"], sort=False):
        lines += ["", f"### {dataset}: {recording} ({int(d.event_ref.iloc[0])} seizure(s), {d.hours.iloc[0]:.2f} h)", "",
                  "| pipeline | channels | event sensitivity | event precision | event F1 | TP / FP | FP/24 h (h scored) | "
                  "sample sensitivity | sample precision | sample F1 | latency s | first crossing s | target met |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for _, r in d.iterrows():
            met = r.event_sensitivity == 1 and r.latency_s <= target_latency and r.event_fp <= target_fa
            lines.append(
                f"| {r.pipeline} | {r['combine']} | {_fmt(r.event_sensitivity)} | {_fmt(r.event_precision)} | "
                f"{_fmt(r.event_f1)} | {int(r.event_tp)} / {int(r.event_fp)} | {_rate(r)} | {_fmt(r.sample_sensitivity)} | "
                f"{_fmt(r.sample_precision)} | {_fmt(r.sample_f1)} | {_fmt(r.latency_s, digits=1)} | "
                f"{_fmt(r.raw_latency_s, digits=1)} | {'yes' if met else 'no'} |"
            )
    lines += ["", f"### Pooled over {ev.groupby(['dataset', 'recording']).ngroups} recording(s)", "",
              "| pipeline | channels | seizures | event sensitivity | event precision | event F1 | TP / FP | "
              "FP/24 h (h scored) | sample sensitivity | sample precision | sample F1 |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (name, how), d in ev.groupby(["pipeline", "combine"], sort=False):
        p = pooled_scores(d.to_dict("records"))
        lines.append(
            f"| {name} | {how} | {p['event_ref']} | {_fmt(p['event_sensitivity'])} | {_fmt(p['event_precision'])} | "
            f"{_fmt(p['event_f1'])} | {p['event_tp']} / {p['event_fp']} | {_rate(p)} | {_fmt(p['sample_sensitivity'])} | "
            f"{_fmt(p['sample_precision'])} | {_fmt(p['sample_f1'])} |"
        )
    return lines


def detector_grid(traces: dict, events: dict, detector: AlarmRule) -> list[str]:
    """Post-hoc table: latency / SzCORE false positives of the main combination for other detector settings."""
    combine = str(events.get("combine", "top3"))
    keys = [(r, n) for r, n, c in traces if c == combine]
    if not keys:
        return []
    settings = [(0.0, 0.0), (2.0, 2.0), (5.0, 0.0), (0.0, 5.0), (5.0, 5.0), (10.0, 5.0)]
    lines = ["", f"Detector settings (post hoc, same recordings, channels {combine}, threshold {detector.threshold:g}): "
             "latency s / event false positives (SzCORE).", "",
             "| recording | pipeline | " + " | ".join(f"smooth {a:g} s, hold {b:g} s" for a, b in settings) + " |",
             "|---" * (len(settings) + 2) + "|"]  # fmt: skip
    for rec, name in keys:
        t = traces[(rec, name, combine)]
        cells = []
        for smooth, hold in settings:
            alarms = detect_alarms(AlarmRule(detector.threshold, hold, smooth, detector.warmup_s), t["times"], t["proba"])
            fp = score_recording(t["seizures"], alarm_events(alarms, t["hop"]), t["duration"])["event_fp"]
            cells.append(f"{_fmt(latency([a['raised_s'] for a in alarms], t['seizures']), digits=0)} / {fp}")
        lines.append(f"| {rec} | {name} | " + " | ".join(cells) + " |")
    return lines


def summary_markdown(frame, title, cfg, seg_frame, events, detector, spec, pre, traces=None) -> str:
    lines = [f"# {title}", "", f"Seed {cfg['seed']}; machine: {machine_description()}.", ""]
    lines.append(
        f"Preprocessing (causal, as live): {json.dumps(pre.to_config())}. Windows: {spec.length_s:g} s at {spec.sfreq:g} Hz, "
        f"hop {spec.hop_s:g} s on Bonn, first {spec.settle_s:g} s of each Bonn segment dropped (filter start-up)."
    )
    lines += ["", "## Bonn segments", "",
              "A segment's probability is the mean over its windows; decision at 0.5. Folds are grouped by segment "
              "(the files carry no subject identity, so segments of one patient can fall in train and test). "
              "Accuracy etc.: mean ± std over folds; pooled: all out-of-fold segments together."]  # fmt: skip
    lines += segment_table(frame, seg_frame)
    seg = frame[frame.session == "segments"]
    for dataset, d in seg.groupby("dataset", sort=False):
        best = d.groupby("pipeline").accuracy.mean().sort_values(ascending=False)
        verdict = "meets" if best.iloc[0] >= 0.97 else "misses"
        lines.append(f"\n{dataset}: best **{best.index[0]}** {best.iloc[0]:.3f}, {verdict} the 0.97 target.")
    if events:
        tl = float(events.get("target_latency_s", 20.0))
        tf = int(events.get("target_false_alarms", 1))
        lines += ["", "## Continuous recordings: SzCORE scores", "",
                  f"Trained on all Bonn windows of {events.get('train_task', 'ABCD-E')} (single channel), run on every "
                  f"channel of each recording every {float(events.get('hop_s', 1.0)):g} s; channel probabilities combined "
                  f"('top3' = mean of the 3 highest; 'joint' = MVPFormer on all channels at once). Detector: trailing mean "
                  f"over {detector.smoothing_s:g} s, threshold {detector.threshold:g}, at least {detector.duration_s:g} s "
                  f"above it, no alarm in the first {detector.warmup_s:g} s; an event spans its run above threshold. "
                  f"Reference: Malow from onset {float(events['onset_s']):g} s (documented: about 350 s) to "
                  f"{'the end of the recording' if events.get('offset_s') is None else str(events['offset_s']) + ' s'}; "
                  f"BIDS recordings: the seizures of their events.tsv."
                  + (f" '{events.get('combine', 'top3')} @ T': the same at the pipeline's operating point T, the lowest "
                     f"threshold whose alarms on its out-of-fold Bonn background windows stay within "
                     f"{float(events['operating_point'].get('target_fp_per_24h', TARGET_FP_PER_24H)):g} per 24 h (as `bci train` saves it): "
                     f"how that threshold transfers." if events.get("operating_point") else ""), "",
                  f"Scored as SzCORE scores (Dan et al., Epilepsia 2025) with its reference library timescoring, "
                  f"{parameters_text()}. Event level: a seizure is detected when a detector event overlaps it widened by "
                  f"the tolerances; detector events touching no widened seizure are false positives (FP/24 h with the "
                  f"hours scored: one FP in a 500 s recording is 173 FP/24 h). Sample level: per second. Pooled: counts and "
                  f"hours summed over recordings. Latency: first alarm at or after onset within the seizure (mean over the "
                  f"seizures reached). Target: every seizure detected within {tl:g} s with <= {tf} event false positive. "
                  f"The '{events.get('combine', 'top3')}' rows are the saved models `models/<pipeline>` through their "
                  f"streaming predictor: `bci stream --model models/<pipeline>` raises the same alarms on a replay."]  # fmt: skip
        lines += event_table(frame, tl, tf)
        lines += ["", "'first crossing': first decision within the seizure whose combined (unsmoothed) probability reaches "
                  "the threshold, the model's share of the latency; the rest is the detector's smoothing and minimum "
                  "duration. Windows end at the decision time, so a window needs some seconds of ictal signal."]
        lines += detector_grid(traces or {}, events, detector)
        lines += ["", "![probability trend](malow_trend.png)"]
    return "\n".join(lines) + "\n"


def summary_text(frame) -> str:
    """Console summary for ``bci evaluate``."""
    seg = frame[frame.session == "segments"]
    out = []
    if len(seg):
        agg = seg.groupby(["dataset", "pipeline"])[["accuracy", "sensitivity", "specificity", "roc_auc", "kappa"]].mean()
        out.append(agg.to_string(float_format=lambda v: f"{v:.3f}"))
    ev = frame[frame.session == "events"]
    if len(ev):
        cols = ["recording", "pipeline", "combine", "event_sensitivity", "event_precision", "event_f1", "event_fp_per_24h",
                "hours", "latency_s"]  # fmt: skip
        out.append(ev[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return "\n\n".join(out)

