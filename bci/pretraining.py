"""``bci pretrain``: self-supervised MVPFormer pretraining from a config.

Unlabelled windows are cut from any recordings (mixed channel counts: no padding,
batches are grouped by channel count) and fed to :func:`models.pretrain.pretrain`
(contrastive next-segment prediction, checkpoints, resume, loss log and plot). The
same command runs in one process or under ``torchrun --nproc_per_node=K`` (one
process per GPU or CPU worker): the process group is set up from torchrun's
environment (NCCL on GPUs, gloo on CPU), every rank builds the same window index, the
sampler gives rank ``r`` batches ``r, r + K, ...`` of one seed-determined order, and
rank 0 writes the checkpoints and logs.

Config (YAML; top-level ``datasets`` are MOABB datasets read as continuous runs, as in
``bci train``)::
    seed: 0
    datasets: [{name: PhysionetMI, subjects: [1], params: {imagined: true}}]   # optional
    pretrain:
      recordings: [../shared/data/seizure/malow, "../shared/data/seizure/bonn/Z_A/Z00*.txt"]
      preprocessing: {bandpass: [0.5, 40], notch: 50}   # bci.preprocess.Preprocessor (zero phase)
      sfreq: 128              # every recording is resampled to this rate (Hz)
      segment_seconds: 1.0    # one token per channel per segment: segment_len = sfreq * this
      window_segments: 8      # segments per window (>= 2)
      hop_segments: 8         # window hop in segments (default: window_segments)
      max_windows_per_recording: 64   # evenly spaced windows kept per recording (null: all)
      normalize: zscore       # per window and channel; "global" (one factor for all data: keeps
                              # amplitude, for model: {amplitude: bands}); "microvolts"; "none" (volts)
      model: {size: tiny}     # MVPFormer arguments (size tiny | S | M, drop_prob, ...)
      steps: 200              # total optimisation steps (a resumed run counts on)
      batch_size: 8           # windows per batch and per process
      lr: 0.001
      weight_decay: 0.01
      checkpoint_every: 50
      strategy: ddp           # under torchrun: ddp, or fsdp (sharded; for size M)
      device: auto            # auto (CUDA when available) | cpu | cuda

``MODEL_DIR`` receives ``checkpoint.pt``, ``model.pt``, ``config.json`` (the
MVPFormer arguments), ``loss.csv``, ``loss.png`` and ``pretrain.json`` (the data
settings a downstream user must reproduce: rate, segment, normalisation and its factor
``scale`` for ``normalize: global``, sources).

Amplitude: ``zscore`` removes each window's amplitude, and the tokenizer's RMSNorm each
token's; seizures are mostly a power change. ``normalize: global`` multiplies every window
by one factor, ``1 / std`` of all the pretraining samples (as a fine-tuned
``DeepClassifier`` with ``scale: auto`` does with its training data), so amplitude
differences between windows, channels and recordings stay, and ``model: {amplitude:
bands}`` feeds the tokens' log amplitude to the model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from mne.filter import resample

from models.hub import is_hub_id, load_pretrained
from models.mvpformer import MVPFormer, segment_samples
from models.pretrain import STRATEGIES, SUMMARY, WEIGHTS, pretrain

from .channels import DATA_TYPES, ChannelSet
from .config import Config, check_keys, load_config, validate_preprocessing
from .datasets import recording_paths, training_recordings
from .environment import cache_dir
from .errors import ConfigError, DataError, ModelError
from .preprocess import Preprocessor, sliding_windows

log = logging.getLogger(__name__)

PRETRAIN_KEYS = {
    "recordings", "preprocessing", "sfreq", "segment_seconds", "window_segments", "hop_segments",
    "max_windows_per_recording", "normalize", "model", "steps", "batch_size", "lr", "weight_decay",
    "checkpoint_every", "strategy", "device", "seed", "temperature", "n_negatives",
}  # fmt: skip
NORMALIZE = ("zscore", "global", "microvolts", "none")
DEFAULTS = {
    "segment_seconds": 1.0, "window_segments": 8, "max_windows_per_recording": None,
    "normalize": "zscore", "model": {"size": "tiny"}, "steps": 100, "batch_size": 8, "lr": 1e-3,
    "weight_decay": 0.01, "checkpoint_every": 50, "strategy": "ddp", "device": "auto",
    "temperature": 0.1, "n_negatives": None,
}  # fmt: skip


def _number(cfg: Config, key: str, value, *, integer=False, minimum=None, allow_none=False):
    if value is None and allow_none:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if integer:
        ok = ok and float(value).is_integer()
    if not ok or (minimum is not None and value < minimum):
        what = "an integer" if integer else "a number"
        bound = f" >= {minimum}" if minimum is not None else ""
        raise cfg.error(f"pretrain.{key}", f"expected {what}{bound}, found {value!r}")
    return int(value) if integer else float(value)


def validate_pretrain_section(cfg: Config) -> dict:
    """The ``pretrain`` section with defaults filled in; errors name the key."""
    section = cfg.get("pretrain")
    if not isinstance(section, dict):
        raise cfg.error("pretrain", "missing; expected a mapping with at least 'recordings' (or top-level 'datasets') and 'sfreq'")
    check_keys(section, PRETRAIN_KEYS, f"{cfg.path}: pretrain")
    out = {**DEFAULTS, **section}
    recordings = out.get("recordings") or []
    if not isinstance(recordings, list) or not all(isinstance(r, str) for r in recordings):
        raise cfg.error("pretrain.recordings", f"expected a list of files, folders or glob patterns, found {recordings!r}")
    if not recordings and not cfg.get("datasets"):
        raise cfg.error("pretrain", "no data: list 'pretrain.recordings' or top-level MOABB 'datasets'")
    out["preprocessing"] = validate_preprocessing(cfg, out.get("preprocessing"), "pretrain.preprocessing")
    if out["preprocessing"].get("resample") is not None:
        raise cfg.error("pretrain.preprocessing.resample", "use pretrain.sfreq: every recording is resampled to it")
    if out["preprocessing"].pop("euclidean_alignment", None):
        raise cfg.error("pretrain.preprocessing.euclidean_alignment", "not used in pretraining (no calibration)")
    if "sfreq" not in section:
        raise cfg.error("pretrain.sfreq", "missing; expected the model's sampling rate in Hz (e.g. 128)")
    out["sfreq"] = _number(cfg, "sfreq", out["sfreq"], minimum=1)
    out["segment_seconds"] = _number(cfg, "segment_seconds", out["segment_seconds"])
    if out["segment_seconds"] <= 0:
        raise cfg.error("pretrain.segment_seconds", f"expected a positive duration, found {out['segment_seconds']!r}")
    out["window_segments"] = _number(cfg, "window_segments", out["window_segments"], integer=True, minimum=2)
    out["hop_segments"] = _number(cfg, "hop_segments", out.get("hop_segments", out["window_segments"]), integer=True, minimum=1)
    out["max_windows_per_recording"] = _number(cfg, "max_windows_per_recording", out["max_windows_per_recording"], integer=True, minimum=1, allow_none=True)
    if out["normalize"] not in NORMALIZE:
        raise cfg.error("pretrain.normalize", f"expected one of {', '.join(NORMALIZE)}, found {out['normalize']!r}")
    model = out["model"]
    if not isinstance(model, dict):
        raise cfg.error("pretrain.model", f"expected a mapping of MVPFormer arguments (e.g. {{size: tiny}}), found {model!r}")
    if "segment_len" in model:
        raise cfg.error("pretrain.model.segment_len", "set by pretrain.sfreq x pretrain.segment_seconds")
    for key, minimum in (("steps", 1), ("batch_size", 1), ("checkpoint_every", 1)):
        out[key] = _number(cfg, key, out[key], integer=True, minimum=minimum)
    out["lr"] = _number(cfg, "lr", out["lr"])
    out["weight_decay"] = _number(cfg, "weight_decay", out["weight_decay"], minimum=0)
    out["temperature"] = _number(cfg, "temperature", out["temperature"])
    out["n_negatives"] = _number(cfg, "n_negatives", out["n_negatives"], integer=True, minimum=1, allow_none=True)
    if out["lr"] <= 0 or out["temperature"] <= 0:
        raise cfg.error("pretrain.lr" if out["lr"] <= 0 else "pretrain.temperature", "expected a positive number")

    if out["strategy"] not in STRATEGIES:
        raise cfg.error("pretrain.strategy", f"expected one of {', '.join(STRATEGIES)}, found {out['strategy']!r}")
    if out["device"] not in ("auto", "cpu", "cuda"):
        raise cfg.error("pretrain.device", f"expected auto, cpu or cuda, found {out['device']!r}")
    seed = out.get("seed", cfg["seed"])
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise cfg.error("pretrain.seed", f"expected an integer, found {seed!r}")
    out["seed"] = seed
    return out


@dataclass
class PretrainWindows:
    """Unlabelled windows ``(C_i, window_segments * segment_len)``, float32, mixed ``C_i``."""

    windows: list
    segment_len: int
    sources: list  # (source name, channels, windows kept, windows available)
    scale: float | None = None  # normalize "global": the factor applied to every window (volts -> model input)


def _normalize(windows: np.ndarray, how: str) -> np.ndarray:
    """Per-window normalisation (``global`` is applied once all windows are cut)."""
    if how == "microvolts":
        return windows * 1e6
    if how == "zscore":
        mean = windows.mean(axis=-1, keepdims=True)
        std = windows.std(axis=-1, keepdims=True)
        return (windows - mean) / np.where(std > 1e-12, std, 1.0)  # a flat channel stays 0
    return windows


def pretrain_windows(cfg: Config, section: dict) -> PretrainWindows:
    """Load, preprocess, resample and window every configured recording."""

    seg_len = segment_samples(section["sfreq"], section["segment_seconds"])
    window_s = section["window_segments"] * section["segment_seconds"]
    hop_s = section["hop_segments"] * section["segment_seconds"]
    pre = Preprocessor.from_config(section["preprocessing"])
    windows, sources = [], []
    for name, rec, _ in training_recordings(cfg, section):
        keep = [i for i, t in enumerate(rec.channels.types) if t in DATA_TYPES]
        if not keep:
            raise DataError(f"{name}: no EEG/sEEG/ECoG channels (types: {sorted(set(rec.channels.types))})")
        data, sfreq, _ = pre.process_array(rec.data[keep], rec.sfreq, _subset(rec.channels, keep))
        if not np.isclose(sfreq, section["sfreq"]):
            data = resample(data, up=section["sfreq"], down=sfreq, axis=-1, verbose="error")
        if data.shape[1] < seg_len * section["window_segments"]:
            raise DataError(
                f"{name}: {data.shape[1] / section['sfreq']:.1f} s is shorter than one pretraining window "
                f"({window_s:g} s = {section['window_segments']} segments of {section['segment_seconds']:g} s)"
            )
        cut, _ = sliding_windows(data, section["sfreq"], window_s, hop_s)
        cut = cut[:, :, : seg_len * section["window_segments"]]
        limit = section["max_windows_per_recording"]
        available = len(cut)
        if limit and available > limit:
            cut = cut[np.unique(np.linspace(0, available - 1, limit).round().astype(int))]
        cut = _normalize(cut, section["normalize"]).astype(np.float32)
        windows.extend(cut)
        sources.append((name, int(cut.shape[1]), int(len(cut)), int(available)))
    if not windows:
        raise DataError("no pretraining windows: the configured recordings gave none")
    scale = None
    if section["normalize"] == "global":
        n = sum(w.size for w in windows)
        mean = sum(float(w.sum(dtype=np.float64)) for w in windows) / n
        std = np.sqrt(sum(float(np.square(w - mean, dtype=np.float64).sum()) for w in windows) / n)
        if std == 0:
            raise DataError("normalize: global: every pretraining sample has the same value")
        scale = 1.0 / std
        windows = [(w * scale).astype(np.float32) for w in windows]
    return PretrainWindows(windows, seg_len, sources, scale)


def _subset(channels, keep):
    return ChannelSet([channels.names[i] for i in keep], [channels.types[i] for i in keep], channels.positions)


def _init_distributed(device_name: str):
    """Join torchrun's process group (if launched by torchrun); returns (rank, world, device)."""

    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if device_name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("pretrain.device: cuda asked for, but no CUDA device is available")
    if world <= 1:
        return 0, 1, "cuda" if want_cuda else "cpu", False
    if not dist.is_initialized():
        if want_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if want_cuda else "gloo")
        owned = True
    else:
        owned = False
    device = f"cuda:{torch.cuda.current_device()}" if want_cuda else "cpu"
    return dist.get_rank(), dist.get_world_size(), device, owned


def run_pretrain(config, out_dir, *, progress: bool = True, resume: bool = True) -> dict:
    """Pretrain the configured MVPFormer into ``out_dir``; see the module docstring."""

    cfg = config if isinstance(config, Config) else load_config(config)
    section = validate_pretrain_section(cfg)
    out_dir = Path(out_dir)
    rank, world, device, owned = _init_distributed(section["device"])
    try:
        t0 = time.perf_counter()
        data = pretrain_windows(cfg, section)
        load_s = time.perf_counter() - t0
        model_config = {**section["model"], "segment_len": data.segment_len}
        result = pretrain(
            data.windows, model_config, out_dir,
            steps=section["steps"], batch_size=section["batch_size"], lr=section["lr"], seed=section["seed"],
            resume=resume, progress=progress, checkpoint_every=section["checkpoint_every"],
            weight_decay=section["weight_decay"], temperature=section["temperature"],
            n_negatives=section["n_negatives"], device=device, strategy=section["strategy"],
        )  # fmt: skip
        if rank == 0:
            info = {
                "sfreq": section["sfreq"], "segment_seconds": section["segment_seconds"],
                "segment_len": data.segment_len, "window_segments": section["window_segments"],
                "hop_segments": section["hop_segments"], "normalize": section["normalize"], "scale": data.scale,
                "preprocessing": section["preprocessing"], "seed": section["seed"],
                "world_size": world, "strategy": section["strategy"] if world > 1 else "single",
                "sources": [{"name": n, "channels": c, "windows": k, "available": a} for n, c, k, a in data.sources],
                "load_seconds": round(load_s, 2), "config": str(cfg.path), "steps": result["step"],
            }  # fmt: skip
            (out_dir / SUMMARY).write_text(json.dumps(info, indent=2))
    except BaseException:
        # no teardown after a failure: other ranks may still be in a collective (it would
        # hang); torchrun stops them when this process exits non-zero
        raise
    else:
        if owned:
            # every rank waits for rank 0's files, then all leave together: a rank tearing
            # gloo down while its peer still runs was seen to abort (SIGABRT) at exit
            dist.barrier()
            dist.destroy_process_group()
    return {
        **result, "rank": rank, "world_size": world, "n_recordings": len(data.sources),
        "strategy": section["strategy"] if world > 1 else "single process",
        "preset": section["model"].get("size", "tiny"),
    }  # fmt: skip


# ------------------------------------------------------------------ train.init
INIT_KEYS = {"hub", "pretrain", "cache"}


def default_cache() -> Path:
    """Where ``train.init`` keeps its own pretraining runs: ``$BCI_CACHE/pretrained``, else
    ``$XDG_CACHE_HOME/bci/pretrained``, else ``~/.cache/bci/pretrained``."""
    return cache_dir("pretrained")


def validate_init(cfg: Config, spec) -> dict:
    """``train.init``: the pretrained weights an MVPFormer pipeline starts from, the first available of
    ``hub`` (a hub id read from the local cache only, or a checkpoint folder) and ``pretrain`` (a
    ``bci pretrain`` config, run into ``cache`` when it has not run yet). One-line errors name the key."""
    if not isinstance(spec, dict):
        raise cfg.error("train.init", f"expected a mapping with hub (a hub id or checkpoint folder) and/or pretrain "
                                      f"(a bci pretrain config), found {spec!r}")  # fmt: skip
    check_keys(spec, INIT_KEYS, f"{cfg.path}: train.init")
    for key, value in spec.items():
        if not isinstance(value, str) or not value.strip():
            raise cfg.error(f"train.init.{key}", f"expected a non-empty string, found {value!r}")
    if not spec.get("hub") and not spec.get("pretrain"):
        raise cfg.error("train.init", "names no weights: give hub (a hub id or checkpoint folder) and/or pretrain (a bci pretrain config)")
    out = {"hub": None, "pretrain": None, "cache": cfg.resolve_path(spec["cache"]) if spec.get("cache") else default_cache()}
    if spec.get("hub"):
        folder = cfg.resolve_path(spec["hub"])
        if not folder.is_dir() and not is_hub_id(spec["hub"]):
            raise cfg.error("train.init.hub", f"{spec['hub']!r} is neither a checkpoint folder nor a hub id of the form org/name")
        out["hub"] = str(folder) if folder.is_dir() else spec["hub"]
    if spec.get("pretrain"):
        path = cfg.resolve_path(spec["pretrain"])
        if not path.is_file():
            raise cfg.error("train.init.pretrain", f"no bci pretrain config at {path}")
        try:
            validate_pretrain_section(load_config(path))
        except ConfigError as exc:
            raise cfg.error("train.init.pretrain", str(exc)) from None
        out["pretrain"] = path
    return out


def pretraining_folder(config_path: Path, cache: Path) -> Path:
    """The cache folder of a ``bci pretrain`` config: its name and a digest of its validated
    ``pretrain`` section and of the recording files it reads (path, size, modification time),
    so an edited config or changed data pretrains afresh and an unchanged one is reused."""
    cfg = load_config(config_path)
    section = validate_pretrain_section(cfg)
    files = []
    for path in recording_paths(cfg, section):
        stat = Path(path).stat() if Path(path).is_file() else None
        files.append([path, stat.st_size if stat else None, stat.st_mtime_ns if stat else None])
    key = json.dumps({"pretrain": section, "files": files}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(cache) / f"{Path(config_path).stem}-{digest}"


def resolve_init(spec: dict, *, sfreq: float, check, progress: bool = True) -> tuple[str, dict]:
    """The weights :func:`validate_init`'s ``spec`` resolves to on this machine: ``(source, record)``.

    ``source`` is for ``DeepClassifier(init=...)``: the hub id or checkpoint folder when it loads
    offline and ``check(model, source)`` (the classifier's :meth:`~pipelines.deep.DeepClassifier.check_pretrained`
    at the data's rate) accepts it; else the cache folder of the ``pretrain`` config, pretrained
    first when it holds no finished run (a progress bar; an interrupted run resumes). ``record``
    says which was used, the config, whether it was pretrained now, and why the hub was skipped."""
    record = {"hub": spec["hub"], "pretrain_config": str(spec["pretrain"]) if spec["pretrain"] else None,
              "used": None, "skipped": []}  # fmt: skip
    if spec["hub"]:
        try:
            model, _ = load_pretrained(spec["hub"], local_files_only=True)
            check(model, spec["hub"])
        except (ModelError, DataError, ConfigError) as exc:
            if not spec["pretrain"]:
                raise ConfigError(f"train.init.hub: {exc}") from None
            record["skipped"].append(str(exc))
        else:
            log.info("init: %s (found offline)", spec["hub"])
            return spec["hub"], {**record, "used": "hub"}
    config = load_config(spec["pretrain"])
    section = validate_pretrain_section(config)
    if abs(section["sfreq"] - sfreq) > 1e-6 * sfreq:
        raise ConfigError(f"train.init.pretrain: {spec['pretrain']} pretrains at {section['sfreq']:g} Hz, the training data "
                          f"are at {sfreq:g} Hz; make them equal (pretrain.sfreq, preprocessing.resample)")  # fmt: skip
    model_config = {**section["model"], "segment_len": segment_samples(section["sfreq"], section["segment_seconds"])}
    check(MVPFormer(**model_config), str(spec["pretrain"]))  # the architecture fits the pipeline: known before minutes of pretraining
    folder = pretraining_folder(spec["pretrain"], spec["cache"])
    done = (folder / SUMMARY).is_file() and (folder / WEIGHTS).is_file()
    if done:
        log.info("init: reusing our own pretraining %s (%s)", folder, spec["pretrain"])
    else:
        why = f"{record['skipped'][0]}; " if record["skipped"] else ""
        log.warning("init: %spretraining our own MVPFormer with %s into %s (%d steps; resumes if interrupted)",
                    why, spec["pretrain"], folder, section["steps"])
        run_pretrain(config, folder, progress=progress, resume=True)
    return str(folder), {**record, "used": "pretrain", "pretrained_now": not done}

