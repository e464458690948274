"""Self-supervised pretraining and parameter-efficient fine-tuning of MVPFormer.

Pretraining objective (Carzaniga et al., 2026): contrastive next-segment
prediction. The pretraining head maps the output at ``(t, c)`` to a prediction of
the token embedding at ``(t + 1, c)``; InfoNCE with cosine similarity and
temperature 0.1 scores it against that positive and against negatives drawn from the
other target tokens of the batch.

The loop is the standard PyTorch stack (``Dataset`` -> ``DataLoader`` with a batch
sampler that groups windows of the same shape, i.e. the same channel count ->
``AdamW``), checkpoints ``state_dict``s with ``torch.save`` and resumes with
``torch.load(weights_only=True)``. When ``torch.distributed`` is initialised
(``torchrun``) the model is wrapped in ``DistributedDataParallel`` (or sharded with
FSDP2 ``fully_shard``, one unit per block, for the large sizes: ``strategy="fsdp"``),
the sampler shards batches by rank, the logged loss is the mean over ranks and only
rank 0 writes files, so the same function runs distributed unchanged. Each rank's
loss uses its own batch (its negatives come from that batch), so a step on ``K``
processes equals one process averaging the losses of the same ``K`` batches.

Fine-tuning: :func:`prepare_finetune` freezes the backbone and either trains the
seizure head only, the head plus rank-8 LoRA adapters (:class:`LoRALinear`) on the
attention and MLP projections, or everything.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from bci.errors import ConfigError, DataError, ModelError
from models.mvpformer import MVPFormer

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
WEIGHTS = "model.pt"
LOSS_CSV = "loss.csv"
LOSS_PNG = "loss.png"
#: What ``bci pretrain`` writes beside the weights: the data settings and sources of the run.
SUMMARY = "pretrain.json"
STRATEGIES = ("ddp", "fsdp")

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ objective
def contrastive_loss(pred, target, temperature=0.1, n_negatives=None, generator=None):
    """InfoNCE of next-segment predictions with cosine similarity.

    Parameters
    ----------
    pred, target : Tensor (..., D)
        Predictions and their positives, flattened to ``M`` token pairs.
    temperature : float
        Softmax temperature on the cosine similarities (reference 0.1).
    n_negatives : int or None
        ``None``: every other target token of the batch is a negative (``M x M``
        logits). An int ``K``: one random subset of ``K`` target tokens is shared as
        negatives by all anchors (``M x (K + 1)`` logits, for large batches); a
        sampled token equal to the anchor's own positive is masked out.
    generator : torch.Generator, optional
        For the negative sampling.

    Returns
    -------
    Tensor
        Mean cross-entropy of picking the positive.
    """
    p = nn.functional.normalize(pred.reshape(-1, pred.shape[-1]).float(), dim=-1)
    t = nn.functional.normalize(target.reshape(-1, target.shape[-1]).float(), dim=-1)
    m = p.shape[0]
    if n_negatives is None or n_negatives >= m - 1:
        logits = p @ t.T / temperature
        return nn.functional.cross_entropy(logits, torch.arange(m, device=p.device))
    idx = torch.randperm(m, generator=generator, device="cpu")[:n_negatives].to(p.device)
    pos = (p * t).sum(-1, keepdim=True)
    own = idx[None, :] == torch.arange(m, device=p.device)[:, None]
    neg = (p @ t[idx].T).masked_fill(own, -math.inf)
    logits = torch.cat([pos, neg], dim=1) / temperature
    return nn.functional.cross_entropy(logits, torch.zeros(m, dtype=torch.long, device=p.device))


# ----------------------------------------------------------------------- data
class WindowDataset(Dataset):
    """Unlabelled windows ``(n_channels, n_samples)`` as float32 tensors.

    Wraps a map-style dataset (items may be ``(X, y, ...)`` tuples, as braindecode
    windows datasets give: ``X`` is used) or any iterable of arrays, which is read
    once into memory. Channel counts may differ between windows.
    """

    def __init__(self, windows):
        if isinstance(windows, Dataset) and hasattr(windows, "__len__"):
            self.source = windows
        else:
            self.source = list(windows)
        if len(self.source) == 0:
            raise DataError("pretraining needs at least one window, got none")
        self.shapes = [tuple(self[i].shape) for i in range(len(self.source))]
        bad = [s for s in self.shapes if len(s) != 2]
        if bad:
            raise DataError(
                f"windows must be 2-D (n_channels, n_samples), got shape {bad[0]}"
            )

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        x = self.source[i]
        if isinstance(x, (tuple, list)):
            x = x[0]
        return torch.as_tensor(np.asarray(x), dtype=torch.float32)


class ChannelCountBatchSampler(Sampler):
    """Batches of windows sharing one shape (channel count and length).

    Windows are grouped by shape, shuffled within each group, cut into batches of
    ``batch_size`` (a group's last partial batch is kept unless ``drop_last``), and the
    batches shuffled; the order depends only on ``seed`` and the epoch
    (:meth:`set_epoch`). :meth:`set_start` skips the first batches (resuming).
    With ``world_size > 1`` rank ``r`` takes batches ``r, r + world_size, ...`` of an
    order truncated to a multiple of ``world_size`` (DDP).
    """

    def __init__(self, shapes, batch_size, *, seed=0, drop_last=False, rank=0, world_size=1):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.shapes = list(shapes)
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def set_start(self, start: int):
        self.start = start

    def _batches(self):
        gen = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        groups: dict[tuple, list[int]] = {}
        for i, shape in enumerate(self.shapes):
            groups.setdefault(shape, []).append(i)
        batches = []
        for key in sorted(groups):
            idx = groups[key]
            idx = [idx[j] for j in torch.randperm(len(idx), generator=gen).tolist()]
            for s in range(0, len(idx), self.batch_size):
                batch = idx[s:s + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        batches = [batches[j] for j in torch.randperm(len(batches), generator=gen).tolist()]
        usable = len(batches) - len(batches) % self.world_size
        return batches[:usable][self.rank::self.world_size]

    def __len__(self):
        return len(self._batches())

    def __iter__(self):
        return iter(self._batches()[self.start:])


# ------------------------------------------------------------------- training
def _write_log(path: Path, rows):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss", "lr", "elapsed_s"])
        writer.writerows(rows)
    os.replace(tmp, path)  # a run killed while writing leaves the previous log whole


def _read_log(path: Path, upto: int):
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        [int(r["step"]), float(r["loss"]), float(r["lr"]), float(r["elapsed_s"])]
        for r in rows if int(r["step"]) <= upto
    ]


def _plot_log(path: Path, rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r[0] for r in rows])
    losses = np.array([r[1] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, lw=0.8, alpha=0.5, label="loss")
    if len(losses) >= 10:
        k = max(len(losses) // 20, 5)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, lw=1.5, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("InfoNCE loss")
    ax.set_title("MVPFormer contrastive pretraining")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _full_state(net, model, optimizer, strategy):
    """Unsharded model and optimizer state dicts (a collective call under FSDP);
    ``optimizer=None``: the model's only."""
    if strategy != "fsdp":
        return model.state_dict(), optimizer.state_dict() if optimizer is not None else None
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(net, options=opts)
    optim = get_optimizer_state_dict(net, optimizer, options=opts) if optimizer is not None else None
    prefix = "model."  # net is the _NextSegment wrapper
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}, optim


def _load_full_state(net, model, optimizer, strategy, state, optim):
    if strategy != "fsdp":
        model.load_state_dict(state)
        optimizer.load_state_dict(optim)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(net, {f"model.{k}": v for k, v in state.items()}, options=opts)
    set_optimizer_state_dict(net, optimizer, optim, options=opts)


class _NextSegment(nn.Module):
    """``forward = model.forward_pretrain``, so DDP wraps the pretraining pass."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_pretrain(x)


def pretrain(
    windows_iterable_or_dataset,
    model_config: dict,
    out_dir,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    resume: bool = True,
    progress: bool = True,
    checkpoint_every: int = 100,
    weight_decay: float = 0.01,
    temperature: float = 0.1,
    n_negatives: int | None = None,
    device=None,
    strategy: str = "ddp",
) -> dict:
    """Contrastive next-segment pretraining of an :class:`MVPFormer`.

    Parameters
    ----------
    windows_iterable_or_dataset : Dataset or iterable of arrays
        Unlabelled windows ``(n_channels, n_samples)``; channel counts may differ,
        ``n_samples`` must be a whole number (>= 2) of segments. See
        :class:`WindowDataset`.
    model_config : dict
        Keyword arguments of :class:`MVPFormer` (e.g. ``{"size": "S",
        "segment_len": 2560}``); saved to ``out_dir/config.json``.
    out_dir : path
        Receives ``checkpoint.pt`` (model, optimizer, step, RNG states; every
        ``checkpoint_every`` steps and at the end), ``model.pt`` (final weights),
        ``config.json``, ``loss.csv`` (step, loss, lr, elapsed_s) and ``loss.png``.
    steps : int
        Total optimisation steps (counting those of a resumed run).
    batch_size, lr, seed : int, float, int
        Windows per batch (all of one shape), AdamW learning rate, seed of the
        initialisation, batch order, dropout and negative sampling.
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` if present (its config must match):
        the run then goes on at the saved step with the same batch order and RNG
        state, as if it had not stopped.
    progress : bool
        Show a progress bar.
    checkpoint_every, weight_decay, temperature, n_negatives, device
        Checkpoint period in steps; AdamW weight decay; InfoNCE temperature and
        negatives (see :func:`contrastive_loss`); device (default CUDA if available).
    strategy : {"ddp", "fsdp"}
        Under ``torchrun``: replicate the model on every rank (DDP) or shard
        parameters, gradients and optimizer state across ranks (FSDP2
        ``fully_shard`` per block, then the whole model; for the ``M`` size, whose
        AdamW state alone is about 14 GB). Checkpoints hold full, unsharded state
        dicts either way, so a run can resume with the other strategy. Ignored in a
        single process.

    Returns
    -------
    dict
        ``start_step``, ``step``, ``first_loss``, ``last_loss`` (mean of the last 10
        steps of this call), ``n_windows``, ``batches_per_epoch``, ``seconds`` and the
        paths ``checkpoint``, ``weights``, ``config``, ``loss_csv``, ``loss_png``.
    """
    if steps < 1 or checkpoint_every < 1:
        raise ConfigError(
            f"steps and checkpoint_every must be >= 1, got {steps} and {checkpoint_every}"
        )
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    out_dir = Path(out_dir)
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and distributed:
        device = torch.device("cuda", torch.cuda.current_device())

    data = WindowDataset(windows_iterable_or_dataset)
    if not distributed:
        strategy = "ddp"  # nothing to shard
    torch.manual_seed(seed)
    model = MVPFormer(**model_config).to(device)
    # the seizure head takes no part in pretraining: frozen, so DDP finds every
    # trainable parameter used (AdamW skipped it anyway: its gradient was None)
    model.final_layer.requires_grad_(False)
    net = _NextSegment(model)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        fully_shard(net)
    sampler = ChannelCountBatchSampler(
        data.shapes, batch_size, seed=seed, rank=rank, world_size=world
    )
    n_batches = len(sampler)
    if n_batches == 0:
        raise DataError(f"{len(data)} windows give no batch on {world} process(es)")
    # own generator: creating an iterator must not consume the global RNG (dropout),
    # or a resumed run would drift from an uninterrupted one
    loader = DataLoader(data, batch_sampler=sampler, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed + rank)

    ckpt_path = out_dir / CHECKPOINT
    start = 0
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if json.loads(ckpt["config"]) != json.loads(json.dumps(model_config)):
            raise ConfigError(
                f"{ckpt_path} was written for model config {ckpt['config']}, "
                f"not {json.dumps(model_config)}; use another out_dir or resume=False"
            )
        _load_full_state(net, model, optimizer, strategy, ckpt["model"], ckpt["optimizer"])
        ranks = ckpt.get("rng_ranks")
        if int(ckpt.get("world_size", 1)) != world:
            log.warning(
                "%s was written by %s process(es), resuming on %s: the step count goes on, "
                "the batch order and random streams are not those of an uninterrupted run",
                ckpt_path, ckpt.get("world_size", 1), world,
            )
        if ranks and len(ranks) == world:
            torch.set_rng_state(ranks[rank][0])
            gen.set_state(ranks[rank][1])
        else:
            torch.set_rng_state(ckpt["rng_torch"])
            gen.set_state(ckpt["rng_negatives"])
        start = int(ckpt["step"])
    rows = _read_log(out_dir / LOSS_CSV, start) if start else []
    elapsed0 = rows[-1][3] if rows else 0.0

    if distributed and strategy == "ddp":
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / CONFIG).write_text(json.dumps(model_config, indent=2))

    def save(step):
        # collectives first (every rank takes part), then rank 0 writes
        state, optim = _full_state(net, model, optimizer, strategy)
        rng = [torch.get_rng_state(), gen.get_state()]
        ranks = [None] * world
        if distributed:
            dist.all_gather_object(ranks, rng)
        if rank != 0:
            return
        # the log first, then the checkpoint, each replaced atomically: a run killed in
        # between resumes from the older checkpoint and reads only the rows up to it
        _write_log(out_dir / LOSS_CSV, rows)
        tmp = ckpt_path.with_name(CHECKPOINT + ".tmp")
        torch.save(
            {
                "model": state,
                "optimizer": optim,
                "step": step,
                "config": json.dumps(model_config),
                "rng_torch": rng[0],
                "rng_negatives": rng[1],
                "rng_ranks": ranks if distributed else [rng],
                "world_size": world,
                "strategy": strategy,
            },
            tmp,
        )
        os.replace(tmp, ckpt_path)

    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc="pretrain", unit="step")
    net.train()
    t0 = time.perf_counter()
    step, losses = start, []
    epoch, offset = divmod(start, n_batches)
    while step < steps:
        sampler.set_epoch(epoch)
        sampler.set_start(offset)
        for x in loader:
            pred, target = net(x.to(device))
            loss = contrastive_loss(pred, target, temperature, n_negatives, gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            step += 1
            logged = loss.detach()
            if distributed:  # the objective of the step: the mean over the ranks' batches
                logged = logged.clone()
                dist.all_reduce(logged)
                logged /= world
            losses.append(logged.item())
            rows.append([step, losses[-1], lr, elapsed0 + time.perf_counter() - t0])
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if step % checkpoint_every == 0 or step == steps:
                save(step)
            if step >= steps:
                break
        epoch, offset = epoch + 1, 0
    if bar is not None:
        bar.close()
    if start >= steps:
        save(step)
    state = _full_state(net, model, None, strategy)[0]
    if rank == 0:
        torch.save(state, out_dir / WEIGHTS)
        _plot_log(out_dir / LOSS_PNG, rows)
    return {
        "start_step": start,
        "step": step,
        "first_loss": losses[0] if losses else None,
        "last_loss": float(np.mean(losses[-10:])) if losses else None,
        "n_windows": len(data),
        "batches_per_epoch": n_batches,
        "seconds": time.perf_counter() - t0,
        "checkpoint": str(ckpt_path),
        "weights": str(out_dir / WEIGHTS),
        "config": str(out_dir / CONFIG),
        "loss_csv": str(out_dir / LOSS_CSV),
        "loss_png": str(out_dir / LOSS_PNG),
    }


def load_pretraining(out_dir, **overrides) -> MVPFormer:
    """The :class:`MVPFormer` saved by :func:`pretrain` in ``out_dir``.

    ``overrides`` replace entries of the saved config that do not change parameter
    shapes (e.g. ``drop_prob``, ``backend``, ``local_window``). The final weights
    (``model.pt``) are preferred, else the last checkpoint. Fine-tuning for another
    number of classes replaces ``final_layer`` afterwards.
    """
    out_dir = Path(out_dir)
    if not (out_dir / CONFIG).exists():
        raise ModelError(f"{out_dir} holds no pretrained MVPFormer ({CONFIG} missing)")
    config = {**json.loads((out_dir / CONFIG).read_text()), **overrides}
    model = MVPFormer(**config)
    if (out_dir / WEIGHTS).exists():
        state = torch.load(out_dir / WEIGHTS, map_location="cpu", weights_only=True)
    elif (out_dir / CHECKPOINT).exists():
        state = torch.load(out_dir / CHECKPOINT, map_location="cpu", weights_only=True)["model"]
    else:
        raise ModelError(f"{out_dir} holds neither {WEIGHTS} nor {CHECKPOINT}")
    model.load_state_dict(state)
    return model


# ------------------------------------------------------------------ fine-tuning
class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update (Hu et al., 2022).

    ``y = base(x) + (alpha / rank) * x A^T B^T`` with ``A`` (rank, in) initialised
    like a linear layer and ``B`` (out, rank) at zero, so wrapping does not change
    the output until training moves ``B``.
    """

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0):
        super().__init__()
        if rank < 1:
            raise ConfigError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        self.rank = rank
        self.alpha = alpha
        self.base.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * (self.alpha / self.rank)


#: Linear layers of each block that get LoRA adapters.
LORA_TARGETS = ("q_attn", "c_attn", "c_proj", "gate_proj", "up_proj", "down_proj")


def prepare_finetune(model: MVPFormer, mode: str = "lora", *, rank: int = 8, alpha: float = 16.0):
    """Set up ``model`` for fine-tuning the seizure head; return the trainable parameters.

    ``mode``: ``"lora"`` freezes the backbone, wraps the attention and MLP projections
    of every block (:data:`LORA_TARGETS`) in :class:`LoRALinear` adapters of rank
    ``rank`` and trains those plus ``final_layer``; ``"head"`` trains ``final_layer``
    only; ``"full"`` trains everything but the pretraining head. Modifies ``model``
    in place.
    """
    if mode not in ("lora", "head", "full"):
        raise ConfigError(f"fine-tuning mode must be 'lora', 'head' or 'full', got {mode!r}")
    model.requires_grad_(mode == "full")
    model.pretrain_head.requires_grad_(False)
    if mode == "lora":
        for block in model.blocks:
            for parent in (block.attn, block.mlp):
                for name in LORA_TARGETS:
                    layer = getattr(parent, name, None)
                    if isinstance(layer, nn.Linear):
                        setattr(parent, name, LoRALinear(layer, rank, alpha))
    model.final_layer.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]
