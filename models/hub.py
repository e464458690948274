"""Published MVPFormer checkpoints, loaded through braindecode's Hugging Face Hub support.

braindecode publishes MVPFormer weights on the Hugging Face Hub (``braindecode/
mvpformer-s-pretrained``: the generatively pre-trained MVPFormer-S backbone, 73.6M
parameters; ``braindecode/mvpformer-m-pretrained``: MVPFormer-M; ``braindecode/
mvpformer-s-mayo``: a seizure fine-tune). A checkpoint is a folder in the layout
braindecode's ``save_pretrained`` / ``push_to_hub`` write: ``config.json`` (the
constructor arguments), ``model.safetensors`` (the weights; ``pytorch_model.bin`` beside
it is not read) and a model card ``README.md`` (licence in its front matter, terms of use
in its text).

:func:`load_pretrained` takes a hub id (``"org/name"``) or such a folder, loads it with
braindecode's own ``MVPFormer.from_pretrained`` (huggingface_hub: the ``hub`` extra) and
converts it with :meth:`models.mvpformer.MVPFormer.from_braindecode`, so our kernels and
streaming path serve it. A hub id is read from the local Hugging Face cache when it is
there; ``local_files_only=True`` (or ``HF_HUB_OFFLINE=1``) never touches the network.
Without network, a checkpoint not yet in the cache is refused with the one command that
fetches it on a machine that has network::

    hf download braindecode/mvpformer-s-pretrained

Licence: the MVPFormer authors (IBM) release their weights for research only ("the
software must not be used for diagnostic purposes"); the returned ``info`` carries the
checkpoint's licence and terms of use so the saved model, ``bci predict`` and the
dashboard can show them. Every failure is one line: :class:`~bci.errors.DataError` for a
missing or corrupt checkpoint, :class:`~bci.errors.ModelError` for another architecture or
a hub id that cannot be fetched.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import yaml

from bci.errors import DataError, ModelError
from models.pretrain import CHECKPOINT as PRETRAIN_CHECKPOINT
from models.pretrain import CONFIG as PRETRAIN_CONFIG
from models.pretrain import SUMMARY as PRETRAIN_SUMMARY
from models.pretrain import WEIGHTS as PRETRAIN_WEIGHTS
from models.pretrain import load_pretraining

__all__ = ["DEFAULT_USE", "PUBLISHED", "describe", "is_hub_id", "load_pretrained", "own_pretraining", "read_card"]

#: The published MVPFormer checkpoints (braindecode's Hugging Face organisation).
PUBLISHED = {
    "braindecode/mvpformer-s-pretrained": "MVPFormer-S backbone (73.6M parameters), generatively pre-trained on SWEC iEEG; head not trained",
    "braindecode/mvpformer-m-pretrained": "MVPFormer-M backbone (about 1.2B parameters); head not trained",
    "braindecode/mvpformer-s-mayo": "MVPFormer-S fine-tuned for seizure detection",
}
#: Terms of use recorded when a checkpoint's card states none: those the MVPFormer
#: authors attach to their published weights.
DEFAULT_USE = "research use only, not for diagnostic use (the MVPFormer authors' terms for their weights)"
#: Terms of weights pretrained here (``bci pretrain`` on the user's own recordings).
OWN_USE = "pretrained here by bci pretrain on local recordings"
#: The command that puts a hub checkpoint in the local cache (run where there is network).
FETCH = "hf download {id}"
#: ``config.json`` keys that only an MVPFormer checkpoint has.
_MVPFORMER_KEYS = ("segment_len", "d_model", "n_head_kv", "d_inner", "max_segments", "max_channels")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_WEIGHTS = "model.safetensors"


def _hub():
    try:
        import huggingface_hub
        import safetensors  # noqa: F401  (the weight format from_pretrained reads)
    except ImportError:
        raise ModelError("loading pretrained checkpoints needs the hub extra: pip install -e '.[hub]'") from None
    return huggingface_hub


def is_hub_id(source: str) -> bool:
    """Whether ``source`` has the form of a hub id (``org/name``, not a relative path)."""
    return bool(_HUB_ID.match(source)) and not source.startswith((".", "/", "~"))


def _resolve(source: str, *, cache_dir, local_files_only: bool, revision) -> tuple[str, Path, str | None]:
    """``(kind, config.json path, revision)``: the checkpoint's config, fetched for a hub id."""
    path = Path(source).expanduser()
    if path.is_dir():
        missing = [f for f in ("config.json", _WEIGHTS) if not (path / f).is_file()]
        if missing:
            raise DataError(f"{path}: not a checkpoint folder (no {' or '.join(missing)}; expected the layout "
                            "braindecode's save_pretrained writes: config.json, model.safetensors, README.md)")
        return "directory", path / "config.json", None
    if not is_hub_id(source):
        raise DataError(f"{source}: no checkpoint folder there, and not a hub id of the form org/name")
    hub = _hub()
    from huggingface_hub.utils import (
        EntryNotFoundError, HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        config = hub.hf_hub_download(source, "config.json", revision=revision, cache_dir=cache_dir,
                                     local_files_only=local_files_only)
    except LocalEntryNotFoundError:
        where = "the local cache" + (f" ({cache_dir})" if cache_dir else "")
        raise ModelError(f"{source} is not in {where} and the hub cannot be reached (offline); on a machine "
                         f"with network run: {FETCH.format(id=source)}" + (f" --cache-dir {cache_dir}" if cache_dir else "")) from None
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise ModelError(f"{source}: no such model on the hub ({type(exc).__name__})") from None
    except EntryNotFoundError:
        raise ModelError(f"{source}: the hub repository has no config.json (not a braindecode checkpoint)") from None
    except HFValidationError as exc:
        raise DataError(f"{source}: not a valid hub id ({str(exc).splitlines()[0][:200]})") from None
    config = Path(config)
    snapshot = config.parent.name  # the cache keeps a hub checkpoint under snapshots/<commit>/
    return "hub", config, snapshot if re.fullmatch(r"[0-9a-f]{40}", snapshot) else revision


def _read_config(path: Path, source: str) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{source}: corrupt config.json ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(config, dict):
        raise DataError(f"{source}: config.json holds {type(config).__name__}, expected a mapping")
    absent = [k for k in _MVPFORMER_KEYS if k not in config]
    if absent:
        raise ModelError(f"{source}: not an MVPFormer checkpoint (config.json has no {', '.join(absent)})")
    return config


def read_card(text: str) -> dict:
    """``{"license": ..., "use": ...}`` from a model card (``README.md``).

    ``license`` comes from the YAML front matter (``license``, or ``license_name`` when it
    is ``other``); ``use`` is the card's first sentences about research-only or diagnostic
    use. A key is absent when the card does not say.
    """
    out = {}
    body = text
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.S)
    if match:
        body = text[match.end():]
        try:
            front = yaml.safe_load(match.group(1)) or {}
        except yaml.YAMLError:
            front = {}
        if isinstance(front, dict) and front.get("license"):
            lic = str(front["license"])
            out["license"] = str(front.get("license_name") or lic) if lic == "other" else lic
    sentences = [s for line in re.split(r"\n\s*\n|\n(?=\s*[-*#>|])", body)  # paragraphs and list items
                 for s in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", line))]
    terms = [s.strip(" >*_\"") for s in sentences if re.search(r"diagnos|research (use|purpose)|only be used for research", s, re.I)]
    if terms:
        out["use"] = " ".join(dict.fromkeys(terms))[:400]
    return out


def _card(kind: str, source: str, config_path: Path, *, cache_dir, revision, local_files_only: bool) -> dict:
    card = config_path.parent / "README.md"
    if not card.is_file() and kind == "hub":
        try:  # the card beside the config; never fatal (offline, or a repo without one)
            card = Path(_hub().hf_hub_download(source, "README.md", revision=revision, cache_dir=cache_dir,
                                               local_files_only=local_files_only))
        except Exception:  # noqa: BLE001 - terms are optional; absence is recorded as unknown
            return {}
    try:
        return read_card(card.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return {}


def _braindecode_from_pretrained(source: str, *, cache_dir, local_files_only: bool, revision):
    """braindecode's own loader, strict (every tensor of the checkpoint must fit)."""
    from braindecode.models import MVPFormer as BraindecodeMVPFormer
    from safetensors import SafetensorError

    _hub()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loading weights from local directory"
            return BraindecodeMVPFormer.from_pretrained(
                source, cache_dir=cache_dir, local_files_only=local_files_only, revision=revision, strict=True,
            )
    except SafetensorError as exc:
        raise DataError(f"{source}: corrupt {_WEIGHTS} ({str(exc).splitlines()[0][:200]})") from None
    except RuntimeError as exc:  # load_state_dict: missing/unexpected keys or shapes
        first = str(exc).splitlines()
        detail = " ".join(line.strip() for line in first[:2])[:240]
        raise ModelError(f"{source}: the weights do not fit the MVPFormer its config.json describes ({detail})") from None
    except (TypeError, ValueError) as exc:  # the constructor refused the config
        raise ModelError(f"{source}: braindecode cannot build MVPFormer from config.json ({str(exc).splitlines()[0][:200]})") from None
    except OSError as exc:  # the weights file could not be fetched or read
        raise ModelError(f"{source}: cannot read {_WEIGHTS} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                         f"with network run: {FETCH.format(id=source)}") from None


def own_pretraining(source: str) -> bool:
    """Whether ``source`` is the output folder of ``bci pretrain`` (:func:`models.pretrain.pretrain`:
    ``config.json`` with ``model.pt`` or a checkpoint, no safetensors)."""
    path = Path(source).expanduser()
    return (path.is_dir() and (path / PRETRAIN_CONFIG).is_file() and not (path / _WEIGHTS).is_file()
            and ((path / PRETRAIN_WEIGHTS).is_file() or (path / PRETRAIN_CHECKPOINT).is_file()))  # fmt: skip


def _pretrain_summary(path: Path) -> dict:
    """What a ``bci pretrain`` run's ``pretrain.json`` says about its weights (``{}`` without one):
    config, steps, rate, segment, normalisation and its factor, recordings and windows."""
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(run, dict):
        return {}
    sources = run.get("sources") if isinstance(run.get("sources"), list) else []
    out = {k: run[k] for k in ("config", "steps", "sfreq", "segment_seconds", "window_segments", "normalize", "scale", "seed")
           if k in run}  # fmt: skip
    out["recordings"] = len(sources)
    out["windows"] = int(sum(s.get("windows", 0) for s in sources if isinstance(s, dict)))
    return out


def load_pretrained(source: str, *, cache_dir: str | Path | None = None, local_files_only: bool | None = None,
                    revision: str | None = None, return_braindecode: bool = False):
    """Our :class:`~models.mvpformer.MVPFormer` with a published checkpoint's weights, and its provenance.

    Parameters
    ----------
    source : str
        A hub id (``"braindecode/mvpformer-s-pretrained"``), a checkpoint folder
        (``config.json`` + ``model.safetensors``, as braindecode's ``save_pretrained`` or
        ``hf download`` leave it), or the output folder of this project's ``bci pretrain``
        (:func:`own_pretraining`; ``kind`` "bci pretrain", loaded by
        :func:`models.pretrain.load_pretraining`).
    cache_dir : path or None
        The Hugging Face cache (default ``$HF_HOME/hub``).
    local_files_only : bool or None
        True: never use the network, read the hub id from the cache. None/False: the
        cache first, the hub when missing, unless ``HF_HUB_OFFLINE=1``.
    revision : str or None
        A branch, tag or commit of the hub repository (default ``main``).
    return_braindecode : bool
        Also return braindecode's model as loaded (for checks against it).

    Returns
    -------
    model, info
        ``model`` in eval mode, ``codebook_indexing="reference"``; ``info`` is a mapping of
        plain values: ``source``, ``kind`` ("hub"/"directory"), ``revision`` (the commit,
        for a hub id), ``architecture``, ``n_parameters``, ``braindecode_version``,
        ``license`` ("unknown" when the checkpoint says nothing) and ``use`` (its terms,
        :data:`DEFAULT_USE` when it states none). With ``return_braindecode``,
        ``(model, info, braindecode_model)``.
    """
    from models.mvpformer import MVPFormer

    source = str(source)
    if own_pretraining(source):  # weights of this project's own `bci pretrain` run
        model = load_pretraining(source).eval()
        info = {"source": source, "kind": "bci pretrain", "revision": None, "architecture": "MVPFormer",
                "n_parameters": int(sum(p.numel() for p in model.parameters())),
                "license": "this project's own weights (bci pretrain)", "use": OWN_USE}  # fmt: skip
        summary = _pretrain_summary(Path(source).expanduser() / PRETRAIN_SUMMARY)
        if summary:
            info["pretrain"] = summary
        return (model, info, None) if return_braindecode else (model, info)
    offline = bool(local_files_only)
    kind, config_path, commit = _resolve(source, cache_dir=cache_dir, local_files_only=offline, revision=revision)
    config = _read_config(config_path, source)
    card = _card(kind, source, config_path, cache_dir=cache_dir, revision=commit or revision, local_files_only=offline)
    # load from the snapshot already resolved, so config and weights are of one commit
    bd_model = _braindecode_from_pretrained(source, cache_dir=cache_dir, local_files_only=offline,
                                            revision=commit or revision)
    model = MVPFormer.from_braindecode(bd_model).eval()
    info = {
        "source": source,
        "kind": kind,
        "revision": commit,
        "architecture": "MVPFormer",
        "n_parameters": int(sum(p.numel() for p in bd_model.parameters())),
        "braindecode_version": config.get("braindecode_version"),
        "license": str(config.get("license") or card.get("license") or "unknown"),
        "use": card.get("use") or DEFAULT_USE,
    }
    if source in PUBLISHED:
        info["description"] = PUBLISHED[source]
    return (model, info, bd_model) if return_braindecode else (model, info)


def describe(info: dict) -> str:
    """One line naming a checkpoint's source, licence and terms of use; for weights of our own
    ``bci pretrain``, what they were pretrained on, and the weights named first but not used
    (``train.init``: a hub checkpoint not in the local cache)."""
    at = f"@{info['revision'][:12]}" if info.get("revision") else ""
    run = info.get("pretrain") or {}
    own = ""
    if run:
        config = f" of {Path(str(run['config'])).name}" if run.get("config") else ""
        steps = f"{run['steps']} steps, " if run.get("steps") else ""
        rate = f" at {run['sfreq']:g} Hz" if isinstance(run.get("sfreq"), (int, float)) else ""
        own = (f" (own bci pretrain{config}: {steps}{run.get('windows')} windows of {run.get('recordings')} recordings"
               f"{rate}, normalize {run.get('normalize')})")
    skipped = "".join(f"; not used: {reason}" for reason in (info.get("init") or {}).get("skipped", []))
    return (f"pretrained weights {info.get('source')}{at}{own} (licence: {info.get('license', 'unknown')}; "
            f"{info.get('use') or DEFAULT_USE}){skipped}")
