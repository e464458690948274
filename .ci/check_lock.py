"""Check that requirements.lock still matches pyproject.toml's dependencies.

Run by ``run.sh`` before it installs (and so by CI): every direct dependency of the project
(``[project.dependencies]`` plus the ``test`` extra, markers evaluated for this machine) must be
pinned in the lock at a version its range admits, and every package the lock records as
coming straight from ``pyproject.toml`` must still be a direct dependency. On a mismatch it
prints one line naming the packages and the command that refreshes the lock, and exits 1.

Usage: python .ci/check_lock.py pyproject.toml requirements.lock
"""

import re
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REFRESH = ("uv pip compile pyproject.toml --extra test --python-version 3.11 "
           "--python-platform x86_64-manylinux_2_28 -o requirements.lock")


def read_lock(path):
    """``{name: (version, direct)}`` from a pip-compile style lock file."""
    pins, current = {}, None
    for line in open(path, encoding="utf-8"):
        m = re.match(r"^([A-Za-z0-9._-]+)(\[[^\]]*\])?==([^\s;]+)", line)
        if m:
            current = canonicalize_name(m.group(1))
            pins[current] = [m.group(3), False]
        elif current and re.search(r"#\s*(via\s+)?bci-app \(pyproject\.toml\)", line):
            pins[current][1] = True
    return {k: tuple(v) for k, v in pins.items()}


def problems(pyproject_path, lock_path):
    project = tomllib.load(open(pyproject_path, "rb"))["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for r in project.get("optional-dependencies", {}).get("test", [])]
    pins = read_lock(lock_path)
    found, direct = [], set()
    for req in reqs:
        if req.marker is not None and not req.marker.evaluate({"extra": "test"}):
            continue
        name = canonicalize_name(req.name)
        direct.add(name)
        if name not in pins:
            found.append(f"{req.name} is not in the lock")
        elif not req.specifier.contains(pins[name][0], prereleases=True):
            found.append(f"{req.name}: pyproject wants '{req.specifier}', lock has {pins[name][0]}")
    for name, (version, is_direct) in sorted(pins.items()):
        if is_direct and name not in direct and not any(
                canonicalize_name(r.name) == name for r in reqs):
            found.append(f"{name}=={version} is locked as a direct dependency pyproject no longer has")
    return found


def main(argv):
    pyproject_path, lock_path = argv[1:3]
    found = problems(pyproject_path, lock_path)
    if found:
        print(f"error: {lock_path} does not match {pyproject_path} ({'; '.join(found)}); "
              f"refresh it with: {REFRESH}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
