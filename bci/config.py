"""YAML configuration: loaded with ``yaml.safe_load``'s loader and validated on load.

:func:`read_yaml` reads every YAML file of the application (configs, pipeline files):
safe tags only, no anchors or aliases (a few lines of them expand to gigabytes: the
"billion laughs"), at most :data:`MAX_YAML_BYTES` and :data:`MAX_YAML_DEPTH` levels.

Every error names the file, the key (as a dotted path) and what is allowed, e.g.
``configs/x.yaml: evaluation.kind: expected one of cross_run, cross_session, ...,
found 'crosssession'``. Relative paths inside a config are resolved against the
current directory first, then against the config file's folder.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import yaml

from .errors import ConfigError

EVALUATIONS = ("cross_session", "within_session", "cross_subject", "cross_run", "pseudo_online", "seizure")  # seizure: bci.seizure
PREPROCESSING_KEYS = {
    "reference", "notch", "bandpass", "resample", "filter_order", "notch_quality", "euclidean_alignment",
}  # fmt: skip
#: Top-level sections that are mappings (each command checks its own section's keys).
SECTIONS = ("data", "train", "realtime", "dashboard", "pretrain", "calibration", "window")
MAX_YAML_BYTES = 1_000_000
MAX_YAML_DEPTH = 50
TOP_KEYS = {
    "name", "seed", "data", "datasets", "paradigm", "evaluation", "pipelines", "preprocessing",
    "window", "train", "realtime", "dashboard", "pretrain", "model", "calibration", "description",
}  # fmt: skip


class _PlainLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors/aliases and nesting beyond :data:`MAX_YAML_DEPTH`."""

    depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise ConfigError(f"line {event.start_mark.line + 1}: YAML anchors and aliases (&/*) are not allowed")
        self.depth += 1
        if self.depth > MAX_YAML_DEPTH:
            raise ConfigError(f"line {event.start_mark.line + 1}: nested deeper than {MAX_YAML_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def read_yaml(path: Path):
    """The document in a YAML file (see the module docstring); every failure is a one-line ConfigError."""
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: expected a YAML file of at most {MAX_YAML_BYTES} bytes, found {size}")
    try:
        return yaml.load(path.read_bytes(), Loader=_PlainLoader)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None


class Config(dict):
    """A validated config: a dict that remembers its file for error messages."""

    def __init__(self, data: dict, path: Path):
        super().__init__(data)
        self.path = Path(path)

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {message}")

    def resolve_path(self, value: str) -> Path:
        """A path from the config: as given if it exists, else relative to the config file."""
        p = Path(value).expanduser()
        if p.is_absolute() or p.exists():
            return p
        return (self.path.parent / p).resolve()


def check_keys(section, allowed, key: str) -> dict:
    """``section`` as a dict whose keys are all ``allowed``; a :class:`ConfigError` names the first
    other key, ``key.<name>: unknown key; allowed: ...``. The one key check of every section."""
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"{key}: expected a mapping of {', '.join(sorted(allowed))}, found {section!r}")
    unknown = sorted(set(map(str, section)) - set(allowed))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown key; allowed: {', '.join(sorted(allowed))}")
    return dict(section)


#: What each simple field type accepts, and how an error names it.
_KINDS = {bool: ((bool,), "true or false"), int: ((int,), "an integer"), float: ((int, float), "a number"),
          str: ((str,), "a string"), dict: ((dict,), "a mapping"), list: ((list,), "a list")}  # fmt: skip


def from_section(cls, section, key: str):
    """A config section as the dataclass ``cls`` (one dataclass per section): its keys are the
    fields ``cls`` takes (others are errors, :func:`check_keys`), and a value of a field typed
    ``bool``, ``int``, ``float``, ``str``, ``dict`` or ``list`` (or one of them ``| None``)
    must be of that type; numbers stay as written. Range checks are ``cls``'s own."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values = check_keys(section, fields, key)
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        kind = hints.get(name)
        options = typing.get_args(kind) if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union else (kind,)
        if value is None and type(None) in options:
            continue
        simple = [_KINDS[typing.get_origin(o) or o] for o in options if (typing.get_origin(o) or o) in _KINDS]
        if not simple:
            continue
        ok = any(isinstance(value, accepted) and (bool in accepted or not isinstance(value, bool)) for accepted, _ in simple)
        if not ok:
            what = " or ".join(w for _, w in simple) + (" or null" if type(None) in options else "")
            raise ConfigError(f"{key}.{name}: expected {what}, found {value!r}")
    return cls(**values)


def _expect(cfg: Config, key: str, value, kinds, what: str):
    if not isinstance(value, kinds):
        raise cfg.error(key, f"expected {what}, found {value!r}")
    return value


def _subjects(cfg: Config, key: str, value) -> list[int]:
    if isinstance(value, str) and "-" in value:
        lo, _, hi = value.partition("-")
        if lo.strip().isdigit() and hi.strip().isdigit():
            return list(range(int(lo), int(hi) + 1))
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        return value
    raise cfg.error(key, f"expected a list of positive subject numbers or a range like '1-10', found {value!r}")


def validate_preprocessing(cfg: Config, section: dict | None, key: str = "preprocessing") -> dict:
    section = check_keys(section, PREPROCESSING_KEYS, f"{cfg.path}: {key}")
    band = section.get("bandpass")
    if band is not None:
        ok = isinstance(band, list) and len(band) == 2 and all(b is None or isinstance(b, (int, float)) for b in band)
        if not ok or (band[0] is not None and band[1] is not None and not 0 <= band[0] < band[1]):
            raise cfg.error(f"{key}.bandpass", f"expected [low_hz, high_hz] with low < high, found {band!r}")
    rate = section.get("resample")
    if rate is not None and (not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate <= 0):
        raise cfg.error(f"{key}.resample", f"expected a sampling rate in Hz (> 0), found {rate!r}")
    notch = section.get("notch")
    if notch is not None:
        values = notch if isinstance(notch, list) else [notch]
        if not all(isinstance(v, (int, float)) and v > 0 for v in values):
            raise cfg.error(f"{key}.notch", f"expected a line frequency in Hz or a list of them, found {notch!r}")
    for name, kind in (("filter_order", int), ("notch_quality", (int, float))):
        value = section.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind) or value <= 0):
            raise cfg.error(f"{key}.{name}", f"expected a positive number, found {value!r}")
    ref = section.get("reference")
    if ref not in (None, "none", "average", "double_banana", "shaft_bipolar") and not (
        isinstance(ref, list) and all(isinstance(p, list) and len(p) == 2 for p in ref)
    ):
        raise cfg.error(f"{key}.reference", f"expected null, average, double_banana, shaft_bipolar or [[anode, cathode], ...], found {ref!r}")
    return section


def validate(cfg: Config) -> Config:
    """Check the sections every command shares; command-specific checks live with them."""
    unknown = set(cfg) - TOP_KEYS
    if unknown:
        raise cfg.error(sorted(unknown)[0], f"unknown top-level key; allowed: {', '.join(sorted(TOP_KEYS))}")
    for key in ("name", "description"):
        if key in cfg:
            _expect(cfg, key, cfg[key], str, "a string")
    for key in SECTIONS:
        if cfg.get(key) is not None:
            _expect(cfg, key, cfg[key], dict, "a mapping")
    seed = cfg.setdefault("seed", 42)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise cfg.error("seed", f"expected an integer, found {seed!r}")
    if "preprocessing" in cfg:
        cfg["preprocessing"] = validate_preprocessing(cfg, cfg["preprocessing"])
    for i, ds in enumerate(cfg.get("datasets") or []):
        key = f"datasets[{i}]"
        _expect(cfg, key, ds, dict, "a mapping with 'name' (and 'subjects', 'params', 'path')")
        _expect(cfg, f"{key}.name", ds.get("name"), str, "a dataset name")
        if "subjects" in ds:
            ds["subjects"] = _subjects(cfg, f"{key}.subjects", ds["subjects"])
        _expect(cfg, f"{key}.params", ds.setdefault("params", {}), dict, "a mapping of dataset arguments")
    if "evaluation" in cfg:
        ev = _expect(cfg, "evaluation", cfg["evaluation"], dict, "a mapping with 'kind'")
        kind = ev.get("kind")
        if kind not in EVALUATIONS:
            raise cfg.error("evaluation.kind", f"expected one of {', '.join(EVALUATIONS)}, found {kind!r}")
    if "paradigm" in cfg:
        par = _expect(cfg, "paradigm", cfg["paradigm"], dict, "a mapping with 'name' and 'params'")
        _expect(cfg, "paradigm.name", par.get("name"), str, "a MOABB paradigm name such as LeftRightImagery")
        _expect(cfg, "paradigm.params", par.setdefault("params", {}), dict, "a mapping of paradigm arguments")
    if "pipelines" in cfg:
        pipes = _expect(cfg, "pipelines", cfg["pipelines"], list, "a list of pipeline YAML files or names")
        if not pipes:
            raise cfg.error("pipelines", "expected at least one pipeline")
    return cfg


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    return validate(Config(data, path))
