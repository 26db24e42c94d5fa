"""The package's shape, as issue 13 and DESIGN.md state it, checked on the source text (no import needed).

* layers import downward only: ``_validate``, ``functional``, ``nn``, ``models``,
  ``data``, ``nnx``, ``train``, ``interop``, ``analysis``, ``cli``; ``analysis``
  in particular imports nothing from ``train``;
* no import cycle between modules (module-level imports; an import inside a
  function runs at call time and cannot form a cycle at import time);
* no file in ``jaxcnn/`` over 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "jaxcnn"
LAYERS = ("_validate", "functional", "nn", "models", "data", "nnx", "train", "interop", "analysis", "cli")
MAX_LINES = 400
#: pairs of layers that must not import each other even where the order would allow it
FORBIDDEN = {("analysis", "train")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path, package: str) -> set[str]:
    """``jaxcnn.*`` modules imported at module level (not inside a function), relative imports resolved."""
    out: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        nodes = [node]
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` imports never run
            continue
        if isinstance(node, ast.Try):
            nodes = node.body
        for n in nodes:
            if isinstance(n, ast.Import):
                out.update(a.name for a in n.names if a.name.startswith("jaxcnn"))
            elif isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - n.level + 1] + ([base] if base else [])
                    )
                if base.startswith("jaxcnn"):
                    # `from pkg import submodule` imports the submodule; `from mod import name`, the module
                    out.update(f"{base}.{a.name}" for a in n.names)
                    out.add(base)
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = {m for m in _top_level_imports(path, package) if m in files and m != name}
        # a package named only as the parent of a submodule imported from it is not a dependency
        graph[name] = {m for m in found if not any(f.startswith(m + ".") for f in found)}
    return graph


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_layers_import_downward_only():
    wrong = []
    for module, deps in _graph().items():
        here = _layer(module)
        for dep in deps:
            there = _layer(dep)
            if here is not None and there is not None and (there > here or (LAYERS[here], LAYERS[there]) in FORBIDDEN):
                wrong.append(f"{module} -> {dep}")
    assert not wrong, "imports against the layer order " + " < ".join(LAYERS) + ":\n" + "\n".join(sorted(wrong))


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """Every back edge of a depth-first search, as the cycle it closes."""
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*stack[stack.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_files_stay_under_the_line_limit():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in ROOT.rglob("*.py")}
    assert len(sizes) > 100 and max(sizes.values()) > MAX_LINES // 2  # the walk found the package
    assert not {p: n for p, n in sizes.items() if n > MAX_LINES}


def test_the_checks_can_fail(tmp_path):
    """The parser sees what the checks rely on: a module-level import, a relative one, and not a lazy one."""
    pkg = tmp_path / "jaxcnn" / "analysis"
    pkg.mkdir(parents=True)
    src = pkg / "mod.py"
    src.write_text("from jaxcnn.train import fit\nfrom ..functional import conv\ndef f():\n    import jaxcnn.cli\n")
    found = _top_level_imports(src, "jaxcnn.analysis")
    assert {"jaxcnn.train", "jaxcnn.train.fit", "jaxcnn.functional", "jaxcnn.functional.conv"} <= found
    assert "jaxcnn.cli" not in found
    assert _layer("jaxcnn.analysis.mod") > _layer("jaxcnn.functional.conv")
    assert _layer("jaxcnn.train.fit") > _layer("jaxcnn.nn.conv")
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a"]
    assert _cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
