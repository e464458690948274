"""The install: the import smoke check and the lock's agreement with pyproject.toml."""

import subprocess
import sys
from pathlib import Path

from bci.environment import REQUIRED, broken_install_message, check_imports

ROOT = Path(__file__).resolve().parents[1]


def test_every_required_package_imports():
    assert check_imports() == []
    assert broken_install_message([]) is None


def test_broken_package_is_named_in_one_line_with_the_fix():
    failed = check_imports((("numpy", "arrays"), ("bci_no_such_package", "x"), ("bci_also_missing", "y")))
    assert [name for name, _ in failed] == ["bci_no_such_package", "bci_also_missing"]
    message = broken_install_message(failed)
    assert "\n" not in message
    assert message.startswith("broken install: cannot import bci_no_such_package")
    assert "ModuleNotFoundError" in message and "also failing: bci_also_missing" in message
    assert "requirements.lock" in message


def test_smoke_check_names_torchaudio_for_an_extension_that_does_not_load(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *args):
        if name == "torchaudio":
            raise OSError("libtorchaudio.so: undefined symbol: torch_exception_get_what_without_backtrace")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake)
    message = broken_install_message(check_imports(REQUIRED))
    assert message.startswith("broken install: cannot import torchaudio (imported by braindecode")
    assert "undefined symbol" in message


def _check_lock(pyproject_text: str, tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject_text)
    return subprocess.run([sys.executable, str(ROOT / ".ci/check_lock.py"), str(pyproject), str(ROOT / "requirements.lock")],
                          capture_output=True, text=True, timeout=60)


def test_lock_matches_pyproject(tmp_path):
    done = _check_lock((ROOT / "pyproject.toml").read_text(), tmp_path)
    assert done.returncode == 0, done.stderr


def test_lock_disagreeing_with_pyproject_fails_with_one_line(tmp_path):
    text = (ROOT / "pyproject.toml").read_text()
    assert '"mne>=1.8",' in text
    done = _check_lock(text.replace('"mne>=1.8",', '"mne>=99",'), tmp_path)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert "mne: pyproject wants '>=99'" in done.stderr and "uv pip compile" in done.stderr
    done = _check_lock(text.replace('"tqdm>=4.60",', ""), tmp_path)
    assert done.returncode == 1 and "tqdm==" in done.stderr and "no longer has" in done.stderr


def test_installed_versions_are_the_locked_ones():
    # run.sh installs with the lock as constraints: what CI tested is what a new machine gets
    from importlib import metadata

    from packaging.utils import canonicalize_name

    sys.path.insert(0, str(ROOT / ".ci"))
    from check_lock import read_lock

    pins = read_lock(ROOT / "requirements.lock")
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    assert {"torch", "torchaudio", "braindecode", "mne", "moabb"} <= set(pins)
    differ = {n: (installed[n], v) for n, (v, _) in pins.items() if n in installed and installed[n].split("+")[0] != v}
    assert differ == {}
    missing = sorted(set(pins) - set(installed))
    assert missing == [], f"locked but not installed: {missing}"
