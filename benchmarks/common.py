"""Table printing and JSON export shared by every benchmark."""

from __future__ import annotations

import json
import resource
from pathlib import Path

from bci.environment import machine_description


def _status_mib(field: str) -> float | None:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB; None where there is none."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def rss_mib() -> float:
    """The process's resident memory in MiB (its peak so far where /proc is missing)."""
    now = _status_mib("VmRSS")
    return now if now is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_rss_mib(fn):
    """``(result, peak resident memory above the start in MiB)`` of one call of ``fn``: Linux's
    high-water mark, reset first (``/proc/self/clear_refs``); None for the peak where it cannot be reset."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return fn(), None
    start = rss_mib()
    result = fn()
    peak = _status_mib("VmHWM")
    return result, None if peak is None else max(0.0, peak - start)


def format_table(rows: list[dict], title: str | None = None) -> str:
    """Render records as an aligned plain-text table (floats with 4 significant digits)."""
    if not rows:
        return (title + "\n" if title else "") + "(no rows)"
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    body = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths)) for r in body]
    if title:
        lines.insert(0, title)
    return "\n".join(lines)


def emit(rows: list[dict], title: str, json_path: str | Path | None = None, group: str | None = None) -> None:
    """Print the table and, when asked, write it as a JSON list of records.

    With ``group`` (a key of the rows) the table is printed in one aligned block per
    value of that key, in order of first appearance, each with only its own columns.
    """
    if group is None:
        print(format_table(rows, title))
    else:
        print(title)
        for value in dict.fromkeys(row.get(group) for row in rows):
            print()
            print(format_table([row for row in rows if row.get(group) == value], f"[{group}: {value}]"))
    print(f"machine: {machine_description()}")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(rows, indent=2))
