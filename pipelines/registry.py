"""Pipelines from MOABB-format YAML files (``configs/pipelines/*.yml``).

A file holds ``name``, ``paradigms``, ``pipeline`` (a list of components, each
``{name, from, parameters}``) and optionally ``param_grid`` - MOABB's own format, so
MOABB's benchmark pipelines drop in unchanged. Files are read with
:func:`bci.config.read_yaml` (safe tags, no aliases) and built as MOABB's
:func:`~moabb.pipelines.utils.create_pipeline_from_config` builds them
(``make_pipeline`` of the components), except that every component goes through
:func:`resolve_component`: a scikit-learn estimator class of :data:`ESTIMATOR_PACKAGES`,
a model class of :data:`MODEL_PACKAGES`, or one of :data:`FACTORIES` - never any other
attribute of a module (a function such as ``mne.utils.run_subprocess`` would run with
the file's parameters). MOABB's nested Keras ``optimizer``/``callbacks`` components are
not supported. A ``param_grid`` wraps the pipeline in a
:class:`~sklearn.model_selection.GridSearchCV` as MOABB's evaluations do: a shuffled
stratified inner 3-fold split and the evaluation's scoring (``bci evaluate`` fills the
seed and the scoring in: :func:`fill_unset`).
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path

from sklearn.base import BaseEstimator
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline

from bci.config import read_yaml
from bci.errors import ConfigError

#: Packages whose scikit-learn estimator classes (BaseEstimator subclasses) a component may name.
ESTIMATOR_PACKAGES = ("sklearn", "pyriemann", "moabb", "braindecode", "pipelines")
#: Packages whose network classes (torch.nn.Module subclasses) a component may name.
MODEL_PACKAGES = ("braindecode", "models")
#: The functions a component may name: our pipeline builders.
FACTORIES = (
    "pipelines.riemann.make_riemann_pipeline",
    "pipelines.deep.make_deep_pipeline",
    "pipelines.seizure.make_seizure_pipeline",
)
#: Parameters MOABB's builder reads as nested components (Keras pipelines).
NESTED_COMPONENTS = ("optimizer", "callbacks")
#: Parameters that make an allowed class write to a path the file names (a joblib cache folder).
PATH_PARAMETERS = ("memory",)
PIPELINE_DIR = Path(__file__).resolve().parents[1] / "configs" / "pipelines"


def _find(entry: str, cfg) -> Path:
    candidates = [Path(entry)]
    if cfg is not None:
        candidates.append(cfg.resolve_path(entry))
        candidates.append(Path(cfg.path).parent / "pipelines" / f"{entry}.yml")
    candidates.append(PIPELINE_DIR / (entry if entry.endswith(".yml") else f"{entry}.yml"))
    for c in candidates:
        if c.is_file():
            return c
    known = sorted(p.stem for p in PIPELINE_DIR.glob("*.yml"))
    raise ConfigError(f"unknown pipeline {entry!r}: no such file; pipelines shipped: {', '.join(known)}")


def _package(dotted: str) -> str:
    return dotted.split(".")[0]


def _is_allowed(obj) -> bool:
    """An estimator class of ESTIMATOR_PACKAGES or a network class of MODEL_PACKAGES."""
    if not isinstance(obj, type):
        return False
    package = _package(obj.__module__)
    if package in ESTIMATOR_PACKAGES and issubclass(obj, BaseEstimator):
        return True
    if package in MODEL_PACKAGES:
        import torch

        return issubclass(obj, torch.nn.Module)
    return False


def resolve_component(module: str, name: str):
    """The class or factory ``name`` of ``module`` a pipeline component may use, else ConfigError."""
    dotted = f"{module}.{name}"
    allowed = dotted in FACTORIES or _package(module) in ESTIMATOR_PACKAGES + MODEL_PACKAGES
    if allowed and name.isidentifier() and not name.startswith("_"):
        try:
            obj = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            raise ConfigError(f"{dotted} does not exist") from None
        if dotted in FACTORIES or _is_allowed(obj):
            return obj
    raise ConfigError(
        f"{dotted} is not allowed: expected an estimator class of {', '.join(ESTIMATOR_PACKAGES)}, "
        f"a network class of {', '.join(MODEL_PACKAGES)} or one of {', '.join(FACTORIES)}"
    )


def read_pipeline_file(path: Path) -> dict:
    """Parse and check one MOABB-format pipeline file; every component must resolve (nothing built yet)."""
    spec = read_yaml(path)
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("pipeline"), list):
        raise ConfigError(f"{path}: expected MOABB pipeline format with 'name' (a string), 'paradigms' and a 'pipeline' list")
    if not spec["pipeline"]:
        raise ConfigError(f"{path}: pipeline: expected at least one component")
    for i, comp in enumerate(spec["pipeline"]):
        key = f"{path}: pipeline[{i}]"
        if not isinstance(comp, dict) or not isinstance(comp.get("name"), str) or not isinstance(comp.get("from"), str):
            raise ConfigError(f"{key}: expected a mapping with 'name' and 'from' (strings), found {str(comp)[:80]}")
        params = comp.setdefault("parameters", {})
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            raise ConfigError(f"{key}.parameters: expected a mapping of keyword arguments, found {str(params)[:80]}")
        nested = [k for k in NESTED_COMPONENTS if k in params]
        if nested:
            raise ConfigError(f"{key}.parameters.{nested[0]}: nested components (MOABB's Keras {' and '.join(NESTED_COMPONENTS)}) are not supported")
        writes = [k for k in PATH_PARAMETERS if params.get(k) is not None]
        if writes:
            raise ConfigError(f"{key}.parameters.{writes[0]}: a pipeline file may not name a folder to write to (found {str(params[writes[0]])[:80]!r})")
        try:
            resolve_component(comp["from"], comp["name"])
        except ConfigError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    grid = spec.get("param_grid")
    if grid is not None and not (isinstance(grid, dict) and all(isinstance(v, list) and v for v in grid.values())):
        raise ConfigError(f"{path}: param_grid: expected a mapping of parameter -> non-empty list of values, found {str(grid)[:80]}")
    return spec


def build_pipeline(spec: dict, path: Path | str = "<config>"):
    """The scikit-learn estimator a parsed pipeline file (:func:`read_pipeline_file`) describes."""
    try:
        components = [
            resolve_component(comp["from"], comp["name"])(**copy.deepcopy(comp.get("parameters") or {}))
            for comp in spec["pipeline"]
        ]
        pipeline = make_pipeline(*components)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot build pipeline {spec['name']!r}: {str(exc)[:300]}") from None
    grid = spec.get("param_grid")
    if grid:
        unknown = sorted(set(grid) - set(pipeline.get_params()))
        if unknown:
            raise ConfigError(f"{path}: param_grid: {unknown[0]!r} is not a parameter of the pipeline")
        pipeline = GridSearchCV(pipeline, grid, cv=StratifiedKFold(3, shuffle=True), refit=True)
    return pipeline


def load_pipelines(entries: list, cfg=None) -> dict:
    """``{name: estimator}`` for the config's ``pipelines`` list (file paths or shipped names)."""
    out = {}
    for entry in entries:
        path = _find(str(entry), cfg)
        spec = read_pipeline_file(path)
        if spec["name"] in out:
            raise ConfigError(f"{path}: pipeline name {spec['name']!r} is used twice")
        out[spec["name"]] = build_pipeline(spec, path)
    return out


def fill_unset(estimator: BaseEstimator, *, seed: int, sfreq: float, scoring: str | None = None) -> BaseEstimator:
    """Set unset ``random_state``/``seed`` (and shuffled inner CV splits) to ``seed``, ``sfreq`` to the
    data's rate and, when given, unset ``scoring`` (inner searches) to the evaluation's scoring."""
    update = {}
    for key, value in estimator.get_params(deep=True).items():
        leaf = key.split("__")[-1]
        if value is None and (leaf in ("random_state", "seed")):
            update[key] = seed
        elif value is None and leaf == "sfreq":
            update[key] = sfreq
        elif value is None and leaf == "scoring" and scoring is not None:
            update[key] = scoring
        elif leaf == "cv" and getattr(value, "shuffle", False) and value.random_state is None:
            update[key] = type(value)(n_splits=value.n_splits, shuffle=True, random_state=seed)
    return estimator.set_params(**update) if update else estimator
