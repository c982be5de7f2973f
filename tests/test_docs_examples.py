"""The ```python blocks of README.md and docs/*.md run, so the examples cannot rot.

Each example runs in a fresh interpreter (``sys.executable``, this checkout
first on ``sys.path``), in a scratch directory, with a time limit. It passes
when the interpreter exits 0 and printed no traceback (a greenlet that died in
the background prints one and the example would still exit 0). Tracebacks
point at the Markdown file and line, because each block is compiled under the
page's path with its own line numbers.

A block runs on its own unless an HTML comment on the line(s) just above its
fence says otherwise (invisible once rendered, on GitHub and in the Sphinx site):

``<!-- skip: REASON -->``
    Not run: a fragment, or it needs what a test run does not have (an SSH
    server, a long-running process). The reason is required and is shown by
    ``pytest -rs`` and by ``python tests/test_docs_examples.py``, which lists
    every block and what happens to it.
``<!-- continue -->``
    Runs after the previous python block of the same page, in the same
    interpreter (a page that builds one example step by step). The chain is
    one test, named after the line of its first block.
``<!-- requires: draft -->``
    Runs only where pyzmq has the DRAFT API (``zmq.has("draft")``, e.g. the
    venv of ``scripts/build-draft.sh``), and is skipped elsewhere.

Other fences (```bash, ```console, ```sh, untagged output) are not run.
:data:`PENDING_MARKERS` holds markers for pages whose authors have yet to add
them; a stale entry there fails the test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The pages whose python blocks are run.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: The fence info strings that mean Python.
PYTHON = {"python", "py", "python3"}

#: Seconds one example (a chain of blocks) may take.
TIMEOUT = 30.0

#: Markers for pages that are not this test's to edit, until their authors add
#: them as HTML comments: ``{page: {snippet: marker}}``, the marker written as
#: in the comment. ``snippet`` is a piece of code that occurs in exactly one
#: python block of the page. An entry that matches no block, several blocks, or
#: a block that has a marker of its own fails :func:`test_markers_are_valid`.
PENDING_MARKERS: dict[str, dict[str, str]] = {}

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
_COMMENT = re.compile(r"^\s*<!--\s*(?P<text>.*?)\s*-->\s*$")
_MARKER = re.compile(r"^(?P<kind>skip|continue|requires)\s*(?::\s*(?P<arg>.*))?$")


@dataclass
class Block:
    """One fenced python block of a page."""

    page: Path
    line: int  # line number of the block's first line of code (1-based)
    code: str
    markers: list[str] = field(default_factory=list)  # the HTML comments above the fence
    pending: list[str] = field(default_factory=list)  # markers from PENDING_MARKERS

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT).as_posix()}:{self.line}"

    def marker(self, kind: str) -> tuple[bool, str | None]:
        """Whether the block has a ``kind`` marker, and its argument."""
        for text in self.markers + self.pending:
            m = _MARKER.match(text)
            if m and m["kind"] == kind:
                return True, (m["arg"] or "").strip() or None
        return False, None


def read_blocks(page: Path) -> list[Block]:
    """Every fenced python block of ``page``, with the markers above it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m["fence"], len(m["indent"])
        start = i
        i += 1
        body = []
        while i < len(lines):
            close = lines[i].strip()
            if close.startswith(fence[0] * len(fence)) and not close.strip(fence[0]):
                break
            line = lines[i]
            body.append(line[indent:] if not line[:indent].strip() else line.lstrip())
            i += 1
        i += 1  # past the closing fence (or the end of the page)
        if m["info"].lower() not in PYTHON:
            continue
        markers = []
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        while j >= 0 and (c := _COMMENT.match(lines[j])):
            markers.insert(0, c["text"])
            j -= 1
        blocks.append(Block(page, start + 2, "\n".join(body) + "\n", markers))
    return blocks


def _apply_pending(blocks: list[Block]) -> list[str]:
    """Attach :data:`PENDING_MARKERS` to their blocks; the problems found."""
    problems = []
    for rel, entries in PENDING_MARKERS.items():
        page_blocks = [b for b in blocks if b.page == ROOT / rel]
        for snippet, marker in entries.items():
            hits = [b for b in page_blocks if snippet in b.code]
            where = f"PENDING_MARKERS[{rel!r}][{snippet!r}] in tests/test_docs_examples.py"
            if len(hits) != 1:
                problems.append(
                    f"{rel}: {snippet!r} is in {len(hits)} python blocks, not 1: put <!-- {marker} --> "
                    f"above the block it meant (if one still needs it), and delete {where}"
                )
            elif hits[0].markers:
                problems.append(f"{hits[0].name} has its own marker {hits[0].markers}: delete {where}")
            else:
                hits[0].pending.append(marker)
    return problems


def _check_markers(block: Block) -> list[str]:
    problems = []
    for text in block.markers + block.pending:
        m = _MARKER.match(text)
        if not m or text.startswith(("skip", "requires")) and not m["arg"]:
            problems.append(f"{block.name}: unknown or incomplete marker <!-- {text} -->")
        elif m["kind"] == "requires" and m["arg"].strip() not in _REQUIREMENTS:
            problems.append(
                f"{block.name}: unknown requirement {m['arg']!r} (known: {sorted(_REQUIREMENTS)})"
            )
    return problems


@dataclass
class Example:
    """What one test runs: a block and the blocks that continue it."""

    blocks: list[Block]
    skip: str | None = None  # the reason, when it does not run
    requires: str | None = None

    @property
    def name(self) -> str:
        extra = f"+{len(self.blocks) - 1}" if len(self.blocks) > 1 else ""
        return self.blocks[0].name + extra


def collect() -> tuple[list[Example], list[str]]:
    """The examples of every page, and the marker problems found."""
    blocks = [b for page in PAGES for b in read_blocks(page)]
    problems = _apply_pending(blocks)
    examples: list[Example] = []
    previous: dict[Path, Example] = {}
    for block in blocks:
        problems += _check_markers(block)
        continues, _ = block.marker("continue")
        skipped, reason = block.marker("skip")
        _, requirement = block.marker("requires")
        if continues:
            head = previous.get(block.page)
            if head is None:
                problems.append(f"{block.name}: <!-- continue --> but no python block before it")
                continue
            head.blocks.append(block)
            if skipped and not head.skip:
                problems.append(f"{block.name}: skips itself but not the example it continues")
            head.requires = head.requires or requirement
            continue
        example = Example([block], skip=reason if skipped else None, requires=requirement)
        examples.append(example)
        previous[block.page] = example
    return examples, problems


def _has_draft() -> bool:
    import zmq

    return bool(zmq.has("draft"))


#: What ``<!-- requires: NAME -->`` may name, and how to tell it is there.
_REQUIREMENTS = {"draft": (_has_draft, "needs a DRAFT-enabled libzmq and pyzmq (scripts/build-draft.sh)")}

EXAMPLES, PROBLEMS = collect()

#: Runs in the example's interpreter: every block in one namespace, compiled
#: under the page's path and line numbers (tracebacks then quote the page).
_RUNNER = """\
import json, sys
ns = {"__name__": "__main__"}
for page, line, code in json.load(open(sys.argv[1], encoding="utf-8")):
    exec(compile("\\n" * (line - 1) + code, page, "exec"), ns)
"""


def run_example(example: Example, workdir: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    script = workdir / "blocks.json"
    script.write_text(json.dumps([[str(b.page), b.line, b.code] for b in example.blocks]), encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUNNER, str(script)],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so that a timeout also ends the example's own children
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\n[test_docs_examples: killed after {timeout:g} s]"
        return subprocess.CompletedProcess(proc.args, -signal.SIGKILL, out, err)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever the example left running
    except ProcessLookupError:
        pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_markers_are_valid():
    assert not PROBLEMS, "\n".join(PROBLEMS)


@pytest.mark.timeout(TIMEOUT + 15)
@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example(example: Example, tmp_path: Path):
    if example.skip:
        pytest.skip(f"{example.name}: {example.skip}")
    if example.requires:
        present, why = _REQUIREMENTS[example.requires]
        if not present():
            pytest.skip(f"{example.name}: {why}")
    result = run_example(example, tmp_path)
    report = f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    if result.returncode != 0:
        pytest.fail(f"{example.name} exited {result.returncode}\n{report}", pytrace=False)
    if "Traceback (most recent call last)" in result.stderr:
        pytest.fail(f"{example.name} printed a traceback (a greenlet died?)\n{report}", pytrace=False)


def main() -> int:
    """List every python block of the pages and what the test does with it."""
    for problem in PROBLEMS:
        print("PROBLEM", problem)
    for example in EXAMPLES:
        how = "run"
        if example.skip:
            how = f"skip: {example.skip}"
        elif example.requires:
            how = f"runs only where it has {example.requires}; " + _REQUIREMENTS[example.requires][1]
        print(f"{example.blocks[0].name:32} {how}")
        for block in example.blocks[1:]:
            print(f"  {block.name:30} continues it")
    return 1 if PROBLEMS else 0


if __name__ == "__main__":
    sys.exit(main())
