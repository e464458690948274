"""The machine the application runs on: the import smoke check and a one-line description.

Import smoke check: is every package the application needs importable here?

A broken install (e.g. a torchaudio whose compiled extension does not load against the
installed torch) otherwise shows up as a hundred collection errors deep inside libraries.
:func:`check_imports` tries each required package once, in dependency order, and
:func:`broken_install_message` turns the first failure into one line that names the package,
what went wrong and the fix. The test run calls it first (``tests/conftest.py``).
"""

from __future__ import annotations

import importlib
import os
import platform
from datetime import date
from pathlib import Path

#: (module to import, why the application needs it), in dependency order: a failure is
#: reported at the lowest package that fails, not at everything built on it.
REQUIRED = (
    ("numpy", "arrays"),
    ("scipy", "signal processing"),
    ("sklearn", "pipelines"),
    ("torch", "deep models"),
    ("torchaudio", "imported by braindecode; its extension must match the installed torch"),
    ("mne", "recordings"),
    ("pyriemann", "Riemannian pipelines"),
    ("moabb", "datasets and evaluations"),
    ("braindecode", "deep peers and models"),
    ("pylsl", "live streams (bundles liblsl)"),
    ("skops.io", "saved models"),
    ("timescoring", "SzCORE seizure scoring"),
    ("PySide6.QtWidgets", "the dashboard (Qt)"),
    ("pyqtgraph", "the dashboard's plots"),
    ("triton", "MVPA GPU kernels"),
)

FIX = "re-install from the lock: rm -rf .venv && ./run.sh test (run.sh installs requirements.lock's versions)"


def check_imports(modules=REQUIRED) -> list[tuple[str, str]]:
    """``[(module, error)]`` for every required module that fails to import (empty: all fine)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    failed = []
    for name, _why in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, OSError from a shared library, RuntimeError ...
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            failed.append((name, f"{type(exc).__name__}: {first}"))
    return failed


def broken_install_message(failed: list[tuple[str, str]]) -> str | None:
    """One line naming the first broken package and the fix, or None when nothing failed."""
    if not failed:
        return None
    why = dict(REQUIRED)
    name, error = failed[0]
    others = f" (also failing: {', '.join(n for n, _ in failed[1:])})" if len(failed) > 1 else ""
    return f"broken install: cannot import {name} ({why.get(name, 'required')}): {error}{others}; fix: {FIX}"


def cache_dir(kind: str) -> Path:
    """This user's cache folder for ``kind`` (``pretrained``, ``onnx``): ``$BCI_CACHE/<kind>``,
    else ``$XDG_CACHE_HOME/bci/<kind>``, else ``~/.cache/bci/<kind>``."""
    root = os.environ.get("BCI_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bci"
    return Path(root).expanduser() / kind


def machine_description() -> str:
    """One line naming the machine a report or benchmark ran on (for summary.md, RESULTS.md)."""
    import torch  # local: seconds to import, and only reports and benchmarks need it

    cpu = platform.processor() or platform.machine()
    text = f"{platform.system()} {cpu}, {os.cpu_count()} cores, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return f"{text}, {date.today().isoformat()}"
