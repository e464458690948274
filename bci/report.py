"""Evaluation results and reports: results.csv (:class:`ResultsFile`), summary.md (tables,
paired statistics) and PNG plots.

Statistics are MOABB's (:func:`moabb.analysis.meta_analysis.compute_dataset_statistics`:
paired permutation tests under 20 subjects, Wilcoxon above, and standardised mean
differences), computed on per-subject scores (sessions averaged first). Each pipeline
is compared with the best *baseline* - the best-scoring pipeline named ``moabb:...`` or
``braindecode:...`` (the peers run in the same evaluation), or the best overall when
there is none.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

BASELINE_PREFIXES = ("moabb:", "braindecode:")


class ResultsFile:
    """A results table (CSV) written cell by cell: the one writer of every evaluation.

    A *cell* is the rows sharing the values of the ``key`` columns (default: dataset,
    subject, pipeline); :meth:`finished` says whether a cell is in the file, so a
    re-run resumes where the last one stopped.
    """

    def __init__(self, path: Path, columns: list[str], key: tuple[str, ...] = ("dataset", "subject", "pipeline")):
        self.path, self.columns, self.key = Path(path), list(columns), tuple(key)
        self.done: set[tuple[str, ...]] = set()
        if self.path.exists() and self.path.stat().st_size > 0:
            old = pd.read_csv(self.path, dtype=str, keep_default_na=False)
            self.done = set(zip(*(old[k] for k in self.key)))

    def _key(self, row: dict) -> tuple[str, ...]:
        return tuple(str(row[k]) for k in self.key)

    def finished(self, *values) -> bool:
        return tuple(map(str, values)) in self.done

    def append(self, rows: list[dict]) -> None:
        """Append the rows of newly finished cells; rows of a cell already in the file are
        dropped (a cell retried on another worker, or finished by another run, is written once)."""
        rows = [r for r in rows if self._key(r) not in self.done]
        if not rows:
            return
        frame = pd.DataFrame(rows, columns=self.columns)
        if self.path.exists() and self.path.stat().st_size > 0:
            header = pd.read_csv(self.path, nrows=0).columns.tolist()
            if header != self.columns:  # written by another version: rewrite with today's columns
                frame = pd.concat([pd.read_csv(self.path), frame], ignore_index=True)[self.columns]
                frame.to_csv(self.path, index=False)
            else:
                frame.to_csv(self.path, mode="a", header=False, index=False)
        else:
            frame.to_csv(self.path, index=False)
        self.done |= {self._key(r) for r in rows}

    def clear(self) -> None:
        """Forget every cell and delete the file (a run of another configuration)."""
        self.path.unlink(missing_ok=True)
        self.done = set()

    def remove(self, **match) -> None:
        """Delete the rows whose columns have the given values (cells to compute again)."""
        if not self.path.exists():
            return
        frame = pd.read_csv(self.path, dtype=str, keep_default_na=False)
        gone = np.logical_and.reduce([frame[c] == str(v) for c, v in match.items()])
        self.done -= set(zip(*(frame[gone][k] for k in self.key)))
        pd.read_csv(self.path)[~gone].to_csv(self.path, index=False)

    def reorder(self, keys: list[tuple[str, str, str]]) -> None:
        """Rewrite the file with the rows of the cells ``keys`` (values of the key columns)
        last, in that order; other rows keep their place before them. The text of every
        row is kept as written (no float re-formatting)."""
        if not keys or not self.path.exists():
            return
        with open(self.path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            lines = list(reader)
        at = [header.index(c) for c in self.key]
        wanted = set(keys)
        by_key: dict[tuple, list] = {}
        kept = []
        for line in lines:
            key = tuple(line[a] for a in at)
            (by_key.setdefault(key, []) if key in wanted else kept).append(line)
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(kept)
            for key in keys:
                writer.writerows(by_key.get(key, []))
        os.replace(tmp, self.path)

    def read(self) -> pd.DataFrame:
        return pd.read_csv(self.path) if self.path.exists() else pd.DataFrame(columns=self.columns)


def short_param_names(params: dict) -> dict:
    """``a__b__order`` -> ``order`` wherever every path to that name has the same value."""
    values: dict = {}
    for key, value in params.items():
        values.setdefault(key.rsplit("__", 1)[-1], []).append(value)
    return {
        (leaf if all(v == values[leaf][0] for v in values[leaf]) else key): value
        for key, value in params.items()
        for leaf in [key.rsplit("__", 1)[-1]]
    }


#: Keys of ``params`` that are per-trial records, not settings (kept out of the summary's text).
_RECORD_KEYS = ("correct",)


def _params_text(text: str) -> str:
    try:
        params = {k: v for k, v in json.loads(text).items() if k not in _RECORD_KEYS}
        return json.dumps(short_param_names(params), sort_keys=True)
    except (ValueError, AttributeError):
        return text


def _modes(df: pd.DataFrame) -> pd.DataFrame:
    """Pseudo-online rows with their pipeline and mode apart (``"TS+LR | incremental"``) and
    their per-trial correctness."""
    d = df[df.evaluation == "pseudo_online"].copy()
    parts = d.pipeline.str.rsplit(" | ", n=1, expand=True)
    d["base"], d["mode"] = parts[0], parts[1]
    params = d.params.map(json.loads)
    d["correct"] = params.map(lambda p: np.asarray(p["correct"], float))
    d["after"] = params.map(lambda p: next(v for k, v in p.items() if k.startswith("accuracy_after_")))
    d["after_n"] = params.map(lambda p: next(int(k.rsplit("_", 1)[1]) for k in p if k.startswith("accuracy_after_")))
    return d


def pseudo_online_markdown(df: pd.DataFrame) -> list[str]:
    """Pseudo-online table: each pipeline's accuracy without, with incremental and with
    transductive adaptation, over all trials and after the warm-up trials."""
    d = _modes(df)
    n = int(d.after_n.iloc[0])
    modes = [m for m in ("none", "incremental", "transductive") if m in set(d["mode"])]
    mean = d.groupby(["base", "mode"]).accuracy.mean().unstack()[modes]
    after = d.groupby(["base", "mode"]).after.mean().unstack()[modes]
    lines = ["", "## Pseudo-online (trial by trial through the streaming predictor)", "",
             f"Each test session is played in recorded order, one trial at a time, through `TrainedModel.stream` "
             f"(no look-ahead). Accuracy over all trials, and over the trials after the first {n} (the adaptation's "
             f"warm-up); mean over subjects and sessions. `incremental - transductive`: after {n} trials.", "",
             "| pipeline | " + " | ".join(modes) + " | " + " | ".join(f"{m} after {n}" for m in modes) + " | incremental - transductive |",
             "|---" * (2 * len(modes) + 2) + "|"]  # fmt: skip
    for base in mean.sort_values(modes[-1], ascending=False).index:
        gap = after.loc[base].get("incremental", np.nan) - after.loc[base].get("transductive", np.nan)
        lines.append(f"| {base} | " + " | ".join(f"{v:.3f}" if v == v else "" for v in mean.loc[base])
                     + " | " + " | ".join(f"{v:.3f}" if v == v else "" for v in after.loc[base])
                     + f" | {'' if gap != gap else f'{gap * 100:+.1f} points'} |")  # fmt: skip
    lines += ["", "Plot: `learning_curve.png` (accuracy over the last 20 trials vs trials seen, per mode)."]
    return lines


_MODE_COLOURS = {"none": "tab:orange", "incremental": "tab:blue", "transductive": "tab:green"}


def plot_learning_curves(df: pd.DataFrame, out: Path, window: int = 20) -> Path:
    """Accuracy over a trailing window of trials vs trials seen, one panel per pipeline,
    one line per adaptation mode (mean over subjects and sessions)."""
    import matplotlib  # the Agg backend, chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = _modes(df)
    bases = sorted(set(d.base))
    fig, axes = plt.subplots(1, len(bases), figsize=(4 * len(bases), 3.2), sharey=True, squeeze=False)
    for ax, base in zip(axes[0], bases):
        for mode, g in d[d.base == base].groupby("mode"):
            length = max(len(c) for c in g.correct)
            curves = np.full((len(g), length), np.nan)
            for i, c in enumerate(g.correct):
                kernel = np.ones(window)
                curves[i, : len(c)] = np.convolve(c, kernel)[: len(c)] / np.minimum(np.arange(1, len(c) + 1), window)
            ax.plot(np.arange(1, length + 1), np.nanmean(curves, axis=0), label=mode, color=_MODE_COLOURS.get(mode))
        ax.set_title(base, fontsize=9)
        ax.set_xlabel("trials seen")
        ax.axhline(0.5, color="0.7", lw=0.8)
    axes[0][0].set_ylabel(f"accuracy, last {window} trials")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    path = out / "learning_curve.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _per_subject(df: pd.DataFrame) -> pd.DataFrame:
    return df.groupby(["dataset", "pipeline", "subject"], as_index=False)[["score", "accuracy", "fit_time", "predict_time"]].mean()


def _versus_baseline(subj: pd.DataFrame, base: str) -> dict[str, tuple[float, float]]:
    """MOABB's paired statistics (p, SMD) of each pipeline against ``base``, on the subjects
    both have scores for (an interrupted or partial run leaves some cells empty); pairs
    sharing fewer than 2 subjects are left out."""
    from moabb.analysis.meta_analysis import compute_dataset_statistics

    scores = subj.pivot(index="subject", columns="pipeline", values="score")
    out = {}
    for name in scores.columns.drop(base):
        pair = scores[[name, base]].dropna()
        if len(pair) < 2:
            continue
        frame = pair.reset_index().melt(id_vars="subject", var_name="pipeline", value_name="score")
        stats = compute_dataset_statistics(frame.assign(dataset="d", session="0"))
        hit = stats[(stats.pipe1 == name) & (stats.pipe2 == base)]
        out[name] = (float(hit.p.iloc[0]), float(hit.smd.iloc[0]))
    return out


def summary_markdown(df: pd.DataFrame, title: str) -> str:
    lines = [f"# {title}", ""]
    if df.empty:
        return "\n".join(lines + ["No results."])
    lines.append(
        f"Evaluation: {', '.join(df.evaluation.astype(str).unique())}; scoring: "
        f"{', '.join(df.scoring.astype(str).unique())}; seed: {', '.join(map(str, df.seed.unique()))}."
    )
    for dataset, d in df.groupby("dataset"):
        subj = _per_subject(d)
        agg = subj.groupby("pipeline").agg(
            score_mean=("score", "mean"), score_std=("score", "std"), acc_mean=("accuracy", "mean"),
            acc_std=("accuracy", "std"), fit_s=("fit_time", "mean"), predict_s=("predict_time", "mean"),
            subjects=("subject", "nunique"),
        ).sort_values("score_mean", ascending=False)  # fmt: skip
        # the best-scoring baseline among those run on the most subjects
        complete = agg[agg.subjects == agg.subjects.max()].index
        baselines = [p for p in complete if p.startswith(BASELINE_PREFIXES)]
        best_base = baselines[0] if baselines else complete[0]
        lines += ["", f"## {dataset}", "", f"Best baseline: **{best_base}**.", ""]
        lines.append("| pipeline | score (mean ± std) | accuracy (mean ± std) | fit s | predict s | subjects | vs baseline: p | SMD |")
        lines.append("|---|---|---|---|---|---|---|---|")
        versus = _versus_baseline(subj, best_base)
        for name, row in agg.iterrows():
            p, smd = (f"{versus[name][0]:.3g}", f"{versus[name][1]:+.2f}") if name in versus else ("", "")
            lines.append(
                f"| {name} | {row.score_mean:.3f} ± {np.nan_to_num(row.score_std):.3f} | "
                f"{row.acc_mean:.3f} ± {np.nan_to_num(row.acc_std):.3f} | {row.fit_s:.2f} | {row.predict_s:.3f} | "
                f"{int(row.subjects)} | {p} | {smd} |"
            )
        table = subj.pivot(index="subject", columns="pipeline", values="score")[list(agg.index)]
        lines += ["", "Per-subject scores:", "", "| subject | " + " | ".join(table.columns) + " |"]
        lines.append("|---" * (len(table.columns) + 1) + "|")
        for subject, row in table.iterrows():
            lines.append(f"| {subject} | " + " | ".join("" if np.isnan(v) else f"{v:.3f}" for v in row) + " |")
        if d.session.nunique() > 1 and d.evaluation.iloc[0] in ("cross_session", "pseudo_online"):
            sess = d.groupby(["pipeline", "session"]).score.mean().unstack()
            lines += ["", "Mean score per test session:", "", "| pipeline | " + " | ".join(map(str, sess.columns)) + " |"]
            lines.append("|---" * (len(sess.columns) + 1) + "|")
            for name, row in sess.iterrows():
                lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
        chosen = d[d.params.astype(str) != "{}"]
        if len(chosen):
            lines += ["", "Hyper-parameters chosen (first fits):", ""]
            for name, g in chosen.groupby("pipeline"):
                g = g.drop_duplicates(["subject", "params", "fit_time"])  # the rows of one fit (test sessions) once
                lines.append(f"- {name}: " + "; ".join(f"s{s}: {_params_text(p)}" for s, p in zip(g.subject[:5], g.params[:5])))
    if (df.evaluation == "pseudo_online").any():
        lines += pseudo_online_markdown(df)
    lines += ["", "Plots: `scores.png` (per-subject scores), `comparison.png` (pipelines vs the best baseline)."]
    if (df.evaluation == "cross_session").any():
        lines.append("`sessions.png` (score per test session).")
    return "\n".join(lines) + "\n"


def plot_scores(df: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    subj = _per_subject(df)
    datasets = list(subj.dataset.unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(6, 1.2 * subj.pipeline.nunique()) * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        d = subj[subj.dataset == dataset]
        order = d.groupby("pipeline").score.mean().sort_values(ascending=False).index
        for i, name in enumerate(order):
            vals = d[d.pipeline == name].score
            ax.scatter(np.full(len(vals), i) + np.linspace(-0.15, 0.15, len(vals)), vals, s=14, alpha=0.7)
            ax.hlines(vals.mean(), i - 0.3, i + 0.3, color="k")
        ax.set_xticks(range(len(order)), order, rotation=35, ha="right")
        ax.axhline(0.5, ls=":", color="grey")
        ax.set_ylabel(df.scoring.iloc[0])
        ax.set_title(f"{dataset}: per-subject scores")
    fig.tight_layout()
    paths.append(out / "scores.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 5))
    for dataset in datasets:
        d = subj[subj.dataset == dataset]
        means = d.groupby("pipeline").score.mean()
        base = [p for p in means.sort_values(ascending=False).index if p.startswith(BASELINE_PREFIXES)]
        ref = base[0] if base else means.idxmax()
        wide = d.pivot(index="subject", columns="pipeline", values="score")
        for name in wide.columns.drop(ref):
            ax.scatter(wide[ref], wide[name], label=f"{name} ({dataset})", s=18)
        ax.set_xlabel(f"{ref} score")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_ylabel("pipeline score")
    ax.set_title("Per subject: pipeline vs best baseline")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    paths.append(out / "comparison.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    cross = df[df.evaluation == "cross_session"]
    if len(cross) and cross.session.nunique() > 1:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        sess = cross.groupby(["pipeline", "session"]).score.mean().unstack()
        colors = plt.get_cmap("tab20").colors  # up to 20 pipelines without a repeated colour
        for i, (name, row) in enumerate(sess.iterrows()):
            ax.plot([str(c) for c in row.index], row.values, marker="os^D"[i // 20 % 4], color=colors[i % 20], label=name)
        ax.set_xlabel("test session")
        ax.set_ylabel(df.scoring.iloc[0])
        ax.set_title("Session-to-session transfer")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        paths.append(out / "sessions.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def write_report(df: pd.DataFrame, out: Path, title: str) -> None:
    (out / "summary.md").write_text(summary_markdown(df, title))
    if not df.empty:
        plot_scores(df, out)
    if (df.evaluation == "pseudo_online").any():
        plot_learning_curves(df, out)
