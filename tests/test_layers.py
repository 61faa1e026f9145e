"""The code's layers import one way (issue 11, docs/architecture.md): routes → controllers → the engine's queries
→ db; the engine and the bridge call controllers, never the reverse; the leaves import none of the layers.
Read from the source with ast, so a new module is covered without editing this file."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("routes", "controllers", "engine", "bridge")
LEAVES = ("config", "errors", "audit", "metrics", "jsonsafe", "handlers", "streams", "schemas", "backoff",
          "crashpoints", "db", "workflows")
# What each part must not import at run time (imports under `if TYPE_CHECKING:` are only for types).
FORBIDDEN = {
    "controllers": {"routes", "engine", "bridge", "app"},
    "routes": {"engine", "bridge", "app"},
    "engine": {"routes", "app"},
    "bridge": {"routes", "app"},
    **{leaf: {"routes", "controllers", "engine", "bridge", "app"} for leaf in LEAVES},
}


def runtime_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(child) for stmt in node.body for child in ast.walk(stmt)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def part_of(path: Path) -> str:
    relative = path.relative_to(ROOT)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def test_every_module_imports_only_downwards():
    modules = [p for part in LAYERS for p in (ROOT / part).rglob("*.py")] + [ROOT / f"{leaf}.py" for leaf in LEAVES]
    assert len(modules) > 40
    wrong = []
    for path in modules:
        part = part_of(path)
        bad = runtime_imports(path) & FORBIDDEN[part]
        if bad:
            wrong.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_check_itself_sees_a_forbidden_import(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("from engine import queries\nif TYPE_CHECKING:\n    from bridge.service import Bridge\n")
    assert runtime_imports(module) == {"engine"}
