"""The architecture's import rules, checked on the source (lazy imports inside functions too).

- ``protocols`` is pure protocol logic: no gRPC, no node, no runtime plumbing.
- ``bank_node`` runs inside a bank: it imports nothing of ``bureau_node`` (nor the demo, which
  runs both nodes).
- ``bureau_node`` imports nothing of ``bank_node``; ``node_runtime`` imports no node.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "protocols": {"grpc", "bank_node", "bureau_node", "node_runtime", "xinrong"},
    "bank_node": {"bureau_node", "xinrong.demo", "xinrong.cli", "xinrong.synthetic"},
    "bureau_node": {"bank_node", "xinrong.demo", "xinrong.cli"},
    "node_runtime": {"bank_node", "bureau_node", "xinrong.demo", "xinrong.synthetic"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def violations(package: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for module in imported_modules(path):
            for banned in FORBIDDEN[package]:
                if module == banned or module.startswith(banned + "."):
                    bad.append(f"{path.relative_to(ROOT)} imports {module}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_its_import_rules(package):
    assert violations(package) == []


def test_the_checker_sees_a_violation(tmp_path):
    source = tmp_path / "leaky.py"
    source.write_text("def f():\n    from bureau_node.server import BureauNode\n    import grpc\n")
    assert {"bureau_node.server", "bureau_node.server.BureauNode", "grpc"} <= imported_modules(
        source
    )


def test_the_top_level_is_the_design_cards():
    for name in ("pyproject.toml", "README.md", "proto", "protocols", "bureau_node", "bank_node"):
        assert (ROOT / name).exists(), name
