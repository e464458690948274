"""DBConformer vs braindecode's deep peers: size, training speed, CPU latency.

For every model, on one fixed synthetic data set (default 288 trials of
22 channels x 1001 samples at 250 Hz, 2 classes: the BCI IV 2a shape):

- ``params``: trainable parameters;
- ``train_epoch_ms``: median wall time of one training epoch through
  :class:`pipelines.deep.DeepClassifier` (Adam, batch 32, skorch loop included);
- ``infer_median_ms`` / ``infer_p95_ms``: CPU latency of one forward pass on a
  single window (batch 1), eval mode under ``torch.inference_mode``, over
  ``--runs`` repetitions after warm-up, with the torch thread count in ``threads``.

Threads default to 1: these models are small, and on a shared 2-core machine
two OpenMP threads competing with other processes can make training epochs
tens of times slower (measured: 0.8 s then 77 s for DBConformer's first two
epochs), which would time the machine's load rather than the models.

Run as ``python -m benchmarks.dbconformer [--json PATH]`` (or ``bci bench``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.common import emit
from pipelines.deep import DeepClassifier, _model_class

MODELS = ("DBConformer", "EEGNet", "ShallowFBCSPNet", "EEGConformer")


def _synthetic(n_trials: int, n_chans: int, n_times: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_trials, n_chans, n_times)).astype(np.float32)
    y = np.arange(n_trials) % 2
    return X, y


def _latency_ms(module: torch.nn.Module, n_chans: int, n_times: int, runs: int, warmup: int) -> np.ndarray:
    module.eval()
    x = torch.randn(1, n_chans, n_times)
    times = np.empty(runs)
    with torch.inference_mode():
        for _ in range(warmup):
            module(x)
        for i in range(runs):
            start = time.perf_counter()
            module(x)
            times[i] = time.perf_counter() - start
    return times * 1e3


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the comparison, print the table, return its rows."""
    parser = argparse.ArgumentParser(prog="bci bench dbconformer", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON records")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    parser.add_argument("--trials", type=int, default=288)
    parser.add_argument("--chans", type=int, default=22)
    parser.add_argument("--times", type=int, default=1001)
    parser.add_argument("--sfreq", type=float, default=250.0)
    parser.add_argument("--epochs", type=int, default=2, help="timed training epochs per model")
    parser.add_argument("--runs", type=int, default=300, help="timed batch-1 forward passes")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    X, y = _synthetic(args.trials, args.chans, args.times)
    rows = []
    for name in args.models.split(","):
        _model_class(name)  # fail fast on an unknown name
        clf = DeepClassifier(name, sfreq=args.sfreq, scale=1.0, max_epochs=args.epochs, seed=0).fit(X, y)
        module = clf.module_
        latency = _latency_ms(module, args.chans, args.times, args.runs, args.warmup)
        rows.append(
            {
                "model": name,
                "params": sum(p.numel() for p in module.parameters() if p.requires_grad),
                "train_epoch_ms": float(np.median(clf.net_.history[:, "dur"])) * 1e3,
                "infer_median_ms": float(np.median(latency)),
                "infer_p95_ms": float(np.percentile(latency, 95)),
                "threads": torch.get_num_threads(),
            }
        )
    title = (
        f"Deep models on {args.trials} x {args.chans} x {args.times} ({args.sfreq:g} Hz), "
        f"batch-1 CPU inference over {args.runs} runs"
    )
    emit(rows, title, args.json)
    return rows


if __name__ == "__main__":
    main()
