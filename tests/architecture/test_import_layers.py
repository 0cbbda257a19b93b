"""Imports point downward only: roles -> protocols -> stages -> wire/data/model/privacy -> config.

The test reads every module's imports (``ast``, top-level and inside functions) and checks each
``ppml_hybrid`` import against the layer order below. ``KNOWN_UPWARD`` lists the upward imports
still tolerated (none since the re-layout, issue 12, item 8): a new upward import fails, and so
does an entry of that list that no longer exists (keep it true).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set, Tuple

ROOT = Path(__file__).resolve().parents[2] / "ppml_hybrid"

# (module prefix, layer): the longest matching prefix decides; higher layers may import lower.
LAYERS: Tuple[Tuple[str, int], ...] = (
    ("ppml_hybrid.__main__", 7),
    ("ppml_hybrid.pipeline", 7),
    ("ppml_hybrid.sweep", 7),
    ("ppml_hybrid.report", 7),  # the run report (plots from metrics.json)
    ("ppml_hybrid.roles", 6),  # the deployable roles (party, dealer, K, E, coordinator) and their launcher
    ("ppml_hybrid.training", 5),  # the coordinator's training loop, the run plan, site metrics
    ("ppml_hybrid.keyservice", 5),  # role K
    ("ppml_hybrid.he_stage.evaluator", 5),  # role E
    ("ppml_hybrid.protocols", 4),
    ("ppml_hybrid.he_stage", 3),
    ("ppml_hybrid.smpc_stage", 3),
    ("ppml_hybrid.rpc", 2),
    ("ppml_hybrid.data", 2),
    ("ppml_hybrid.model", 2),
    ("ppml_hybrid.privacy", 2),
    ("ppml_hybrid.consortium", 1),
    ("ppml_hybrid.identity", 1),
    ("ppml_hybrid.config", 1),
    ("ppml_hybrid.errors", 0),
    ("ppml_hybrid", 0),  # the package's own __init__ (version only)
)

ROLE_LAYER = 5  # roles sit on one floor and do not import each other either

KNOWN_UPWARD: Set[Tuple[str, str]] = set()


def _layer(module: str) -> int:
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return dict(LAYERS)[best]


def _package_of(module: str) -> str:
    """The LAYERS prefix a module belongs to (for reporting violations by package)."""
    return max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, module: str) -> Set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: Set[str] = set()
    pkg = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)
    return {m for m in out if m == "ppml_hybrid" or m.startswith("ppml_hybrid.")}


def _upward() -> Dict[Tuple[str, str], str]:
    found: Dict[Tuple[str, str], str] = {}
    for path in sorted(ROOT.rglob("*.py")):
        if "_pb2" in path.name:
            continue
        module = _module_name(path)
        for target in _imports(path, module):
            src, dst = _layer(module), _layer(target)
            sideways = src == dst == ROLE_LAYER and _package_of(target) != _package_of(module)
            if (dst > src or sideways) and not _package_of(target).startswith(module):
                found[(module, _package_of(target))] = target
    return found


def test_imports_point_downward():
    upward = _upward()
    new = {k: v for k, v in upward.items() if (k[0], k[1]) not in KNOWN_UPWARD}
    assert not new, "upward imports (move the code down, or the import up):\n" + "\n".join(
        f"  {m} imports {t} (layer {_layer(m)} -> {_layer(t)})" for (m, _), t in sorted(new.items()))


def test_the_known_upward_list_is_true():
    upward = set(_upward())
    stale = KNOWN_UPWARD - upward
    assert not stale, f"no longer upward, remove from KNOWN_UPWARD: {sorted(stale)}"
