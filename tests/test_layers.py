"""The import structure: no file circles, and the ground layer imports nothing above it.

Layers (README "Layout"; DESIGN.md 2b), imports pointing down only:
ground (bci's errors, config, channels, io, preprocess, buffer, predictor, paradigm, datasets, alarm, szcore,
report, environment) <- pipelines / models / kernels / realtime transport / gui widgets <- the
trained model and the application commands (bci's model, training, seizure, evaluate,
pretraining) <- the CLI. Imports inside functions count as much as those at the top.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bci", "models", "kernels", "pipelines", "realtime", "gui", "benchmarks")
GROUND = ("errors", "config", "channels", "io", "preprocess", "buffer", "predictor", "paradigm", "datasets", "alarm", "szcore",
          "report", "environment")
ABOVE_GROUND = ("pipelines", "models", "kernels", "realtime", "gui", "benchmarks",
                "bci.model", "bci.training", "bci.seizure", "bci.evaluate", "bci.pretraining", "bci.cli")  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def resolve(name: str, modules: dict) -> str | None:
    """The project module an imported dotted name runs (a submodule if it is one, else its package)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules: dict) -> set[str]:
    """Every project module ``module`` imports, at the top or inside functions."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        found |= {m for m in (resolve(n, modules) for n in names) if m and m != module}
    return found


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_file_level_import_circles():
    edges = graph()
    # packages' __init__ files hand names on from their own modules: they are not circles
    files = {m: {w for w in ws if not (m.startswith(w + ".") or w.startswith(m + "."))} for m, ws in edges.items()}
    assert circles(files) == []


def test_ground_layer_imports_nothing_above_it():
    edges = graph()
    upward = {
        f"bci.{g}": sorted(w for w in edges[f"bci.{g}"] if w.startswith(ABOVE_GROUND))
        for g in GROUND
    }  # fmt: skip
    assert {m: ws for m, ws in upward.items() if ws} == {}


def test_the_walker_sees_function_level_and_relative_imports(tmp_path):
    # the check itself: a circle hidden in a function and a relative upward import are both found
    modules = {"bci.io": tmp_path / "io.py", "bci.model": tmp_path / "model.py", "pipelines.deep": tmp_path / "deep.py"}
    modules["bci.io"].write_text("def f():\n    from .model import TrainedModel\n")
    modules["bci.model"].write_text("from bci.io import load\nimport pipelines.deep\n")
    modules["pipelines.deep"].write_text("x = 1\n")
    edges = {m: imports_of(m, p, modules) for m, p in modules.items()}
    assert edges == {"bci.io": {"bci.model"}, "bci.model": {"bci.io", "pipelines.deep"}, "pipelines.deep": set()}
    assert circles(edges) == [["bci.io", "bci.model"]]
