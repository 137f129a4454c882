"""The README's `## Python` section, run from its own text against the test server.

Every fenced ``python`` block of the section runs, in order, in one interpreter (the blocks
share their variables), from the repository root. A fenced ``text`` block right after a python
block (only blank lines between) is what the blocks before it print since the previous text
block; ``...`` in it stands for what varies.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO, Server

MARKER = "@@readme-block-end@@"


def section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n") + 1
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def blocks(text: str) -> list[tuple[int, str, str | None]]:
    """``(line, code, expected output or None)`` for each python block."""
    out: list[tuple[int, str, str | None]] = []
    lines = text.splitlines()
    i, last_was_python = 0, False
    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith("```") and len(line) > 3:
            lang = line[3:]
            end = lines.index("```", i + 1)
            body = "\n".join(lines[i + 1 : end])
            if lang == "python":
                out.append((i + 1, body, None))
                last_was_python = True
            elif lang == "text" and last_was_python:
                number, code, _ = out[-1]
                out[-1] = (number, code, body)
                last_was_python = False
            else:
                last_was_python = False
            i = end + 1
            continue
        if line:
            last_was_python = False
        i += 1
    return out


def matches(expected: str, actual: str) -> bool:
    pattern = ".*?".join(re.escape(part) for part in expected.strip().split("..."))
    return re.fullmatch(pattern, actual.strip(), re.DOTALL) is not None


def test_the_readme_python_section_runs_as_printed(server: Server, tmp_path: Path) -> None:
    text = section((REPO / "README.md").read_text(), "## Python")
    found = blocks(text)
    assert len(found) >= 2 and all(expected is not None for _, _, expected in found), found
    script = ["import sys"]
    for number, code, _ in found:
        script.append(f"exec(compile({code!r}, 'README.md ## Python block {number}', 'exec'))")
        script.append(f"print({MARKER!r}, flush=True)")
    path = tmp_path / "readme_python.py"
    path.write_text("\n".join(script) + "\n")
    env = dict(os.environ, TDC_URL=server.url)
    run = subprocess.run(
        [sys.executable, str(path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, f"the README's python failed:\n{run.stdout}\n{run.stderr}"
    outputs = run.stdout.split(MARKER + "\n")
    for (number, _, expected), actual in zip(found, outputs):
        assert expected is not None
        assert matches(expected, actual), (
            f"block at line {number} printed:\n{actual}\nexpected:\n{expected}"
        )
