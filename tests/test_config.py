"""Config loading: safe YAML, errors that name file, key and allowed values."""

import pytest

from bci.config import load_config
from bci.errors import ConfigError


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_shipped_configs_are_valid():
    from pathlib import Path

    for p in (Path(__file__).parents[1] / "configs").glob("*.yaml"):
        cfg = load_config(p)
        assert isinstance(cfg["seed"], int), p


def test_unknown_evaluation_kind_names_key_and_choices(tmp_path):
    p = _write(tmp_path, "evaluation: {kind: crosssession}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: evaluation.kind: expected one of cross_session.*found 'crosssession'"):
        load_config(p)


def test_wrong_resample_rate(tmp_path):
    p = _write(tmp_path, "preprocessing: {resample: -5}\n")
    with pytest.raises(ConfigError, match=r"preprocessing.resample: expected a sampling rate"):
        load_config(p)


def test_bad_bandpass_and_unknown_key(tmp_path):
    with pytest.raises(ConfigError, match=r"preprocessing.bandpass"):
        load_config(_write(tmp_path, "preprocessing: {bandpass: [30, 8]}\n"))
    with pytest.raises(ConfigError, match=r"preprocessing.lowpass: unknown key"):
        load_config(_write(tmp_path, "preprocessing: {lowpass: 30}\n"))


def test_subject_ranges(tmp_path):
    cfg = load_config(_write(tmp_path, "datasets: [{name: PhysionetMI, subjects: 1-4}]\n"))
    assert cfg["datasets"][0]["subjects"] == [1, 2, 3, 4]


def test_python_objects_in_yaml_refused(tmp_path):
    p = _write(tmp_path, "seed: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "none.yaml")


def test_input_errors_are_value_errors():
    # scikit-learn's checks and callers catching ValueError treat them as bad input
    from bci.errors import BCIError, ConfigError, DataError

    for cls in (ConfigError, DataError):
        assert issubclass(cls, ValueError) and issubclass(cls, BCIError)
