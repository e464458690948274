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


def _params_text(text: str) -> str:
    try:
        return json.dumps(short_param_names(json.loads(text)), sort_keys=True)
    except (ValueError, AttributeError):
        return text


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
        if d.session.nunique() > 1 and d.evaluation.iloc[0] == "cross_session":
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
