"""Print what the pyzmq suite run runs: one pytest process per line.

    python pyzmq_suite_plan.py SDIST_ROOT

Each line is tab-separated: a label, then the pytest arguments (node ids
relative to SDIST_ROOT, where pytest runs). Found by reading pyzmq's test files,
not by importing them:

- every ``*Green*`` test class of tests/test_*.py, grouped by file, except the
  ones pyzmq disabled itself (defined under ``if False:``; listed on stderr);
- the ``zmq.green`` parametrizations of test_imports.py::test_all_exports
  (every public name of zmq is in zmq.green, constants are zmq's own);
- our two modules, copied into tests/ by the runner: test_context_greenzmq.py
  (pyzmq's TestContext on greenzmq's Context, for the disabled
  TestContextGreen) and test_skipped_greenzmq.py.

Exits non-zero if pyzmq's layout changed so that a part of this is not found.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

OUR_MODULES = ["test_context_greenzmq.py", "test_skipped_greenzmq.py"]


def _is_false(test: ast.expr) -> bool:
    return isinstance(test, ast.Constant) and not test.value


def _green_classes(body: list[ast.stmt], disabled: bool, out: list[tuple[str, bool]]) -> None:
    for node in body:
        if isinstance(node, ast.ClassDef) and "Green" in node.name:
            out.append((node.name, disabled))
        elif isinstance(node, ast.If):
            _green_classes(node.body, disabled or _is_false(node.test), out)
            _green_classes(node.orelse, disabled, out)
        elif isinstance(node, ast.Try):
            for part in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                _green_classes(part, disabled, out)


def plan(root: Path) -> list[list[str]]:
    tests = root / "tests"
    lines: list[list[str]] = []
    for path in sorted(tests.glob("test_*.py")):
        if path.name in OUR_MODULES:
            continue
        found: list[tuple[str, bool]] = []
        _green_classes(ast.parse(path.read_text(encoding="utf-8")).body, False, found)
        enabled = [f"tests/{path.name}::{name}" for name, off in found if not off]
        for name, off in found:
            if off:
                print(
                    f"not run: tests/{path.name}::{name} (pyzmq disables it with 'if False:')",
                    file=sys.stderr,
                )
        if enabled:
            lines.append([path.name, *enabled])
    if not lines:
        sys.exit(f"no *Green* test classes found under {tests}")
    imports = tests / "test_imports.py"
    if "def test_all_exports" not in imports.read_text(encoding="utf-8"):
        sys.exit(f"{imports} has no test_all_exports any more")
    lines.append(["test_imports.py[zmq.green]", "tests/test_imports.py::test_all_exports", "-k", "zmq.green"])
    if "class TestContext(" not in (tests / "test_context.py").read_text(encoding="utf-8"):
        sys.exit("tests/test_context.py has no TestContext class any more")
    for name in OUR_MODULES:
        lines.append([name, f"tests/{name}"])
    return lines


if __name__ == "__main__":
    for line in plan(Path(sys.argv[1])):
        print("\t".join(line))
