"""bandit, the Python security linter, finds nothing of high severity in the package."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "chatserver"


def test_bandit_finds_no_high_severity_issue() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bandit", "-r", str(PACKAGE), "-lll", "-q", "-f", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    report = json.loads(done.stdout)
    assert report["errors"] == []
    assert report["results"] == [], json.dumps(report["results"], indent=1)
    assert report["metrics"]["_totals"]["loc"] > 1000  # it did read the package
