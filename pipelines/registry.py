"""Pipelines from MOABB-format YAML files (``configs/pipelines/*.yml``).

A file holds ``name``, ``paradigms``, ``pipeline`` (a list of components, each
``{name, from, parameters}``) and optionally ``param_grid`` - MOABB's own format, so
MOABB's benchmark pipelines drop in unchanged. Files are read with ``yaml.safe_load``
and built with MOABB's :func:`~moabb.pipelines.utils.create_pipeline_from_config`; only
components from the modules in :data:`ALLOWED_MODULES` may be named. A ``param_grid``
wraps the pipeline in a :class:`~sklearn.model_selection.GridSearchCV` as MOABB's
evaluations do: a shuffled stratified inner 3-fold split and the evaluation's scoring
(``bci evaluate`` fills the seed and the scoring in).
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from bci.errors import ConfigError

ALLOWED_MODULES = ("sklearn", "pyriemann", "moabb", "mne", "braindecode", "pipelines", "models")
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


def read_pipeline_file(path: Path) -> dict:
    """Parse and check one MOABB-format pipeline file (no estimator built yet)."""
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(spec, dict) or "name" not in spec or not isinstance(spec.get("pipeline"), list):
        raise ConfigError(f"{path}: expected MOABB pipeline format with 'name', 'paradigms' and a 'pipeline' list")
    for i, comp in enumerate(spec["pipeline"]):
        if not isinstance(comp, dict) or "name" not in comp or "from" not in comp:
            raise ConfigError(f"{path}: pipeline[{i}]: expected a mapping with 'name' and 'from'")
        if not str(comp["from"]).split(".")[0] in ALLOWED_MODULES:
            raise ConfigError(f"{path}: pipeline[{i}].from: module {comp['from']!r} is not allowed ({', '.join(ALLOWED_MODULES)})")
    return spec


def build_pipeline(spec: dict, path: Path | str = "<config>"):
    """The scikit-learn estimator a parsed pipeline file describes."""
    from moabb.pipelines.utils import create_pipeline_from_config

    try:
        pipeline = create_pipeline_from_config(copy.deepcopy(spec["pipeline"]))
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot build pipeline {spec['name']!r}: {exc}") from None
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
