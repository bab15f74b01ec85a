"""The README's walk-through runs as written, twice in a row against one server.

Every ```sh block under the "## Walk-through" heading (up to the next ``## `` heading) is
run, in order, in one bash process with ``set -euo pipefail``, against a live
``chatserver serve`` on a free port and a fresh SQLite database (``BASE`` points the
blocks at it). The second run on the same server and database checks that nothing in the
walk-through depends on a fresh database or on the first run's users and ids.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from testinfra.server import running_server

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Walk-through"
BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.DOTALL | re.MULTILINE)
RUN_TIMEOUT_SECONDS = 60.0

pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("curl") is None,
    reason="the walk-through needs bash and curl",
)


def walkthrough_blocks(text: str) -> list[str]:
    """The ```sh blocks of the walk-through section, in order."""
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    return BLOCK.findall(section)


def script(blocks: list[str]) -> str:
    """One bash script: each block between markers, so a failure names its block."""
    parts = ["set -euo pipefail"]
    for i, block in enumerate(blocks, 1):
        parts += [f"echo '### block {i} start'", block.rstrip("\n"), f"echo '### block {i} ok'"]
    return "\n".join(parts) + "\n"


def run_walkthrough(base_url: str, blocks: list[str]) -> str:
    result = subprocess.run(
        ["bash", "-c", script(blocks)],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "BASE": base_url},
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"walk-through failed (exit {result.returncode}):\n{output}"
    for i in range(1, len(blocks) + 1):
        assert f"### block {i} ok" in result.stdout, output
    return result.stdout


def test_walkthrough_blocks_are_found() -> None:
    blocks = walkthrough_blocks(README.read_text())
    assert len(blocks) >= 5
    text = "\n".join(blocks)
    assert "make run" not in text  # the walk-through talks to a server; it does not start one
    assert "BASE=${BASE:-http://127.0.0.1:8000}" in blocks[0]


def test_walkthrough_runs_twice_against_one_server(tmp_path: Path) -> None:
    blocks = walkthrough_blocks(README.read_text())
    env = {"CHAT_DATABASE_URL": f"sqlite:///{tmp_path}/chat.db"}
    with running_server(tmp_path, env) as server:
        outputs = [run_walkthrough(server.base_url, blocks) for _ in range(2)]
    for out in outputs:
        users = re.search(r"john is user (\d+), jane is user (\d+)", out)
        assert users is not None, out
        assert re.search(r'"message":"hai \d+"', out), out  # sent, then read back
        assert '"type":"message"' in out, out  # the SSE replay delivered it
        assert "with the revoked token: 401" in out, out
        assert '"status":"ok"' in out, out
    first, second = (re.findall(r"is user (\d+)", out) for out in outputs)
    assert set(first).isdisjoint(second)  # the second run made new users
