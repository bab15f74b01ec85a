"""The metrics exporter of a server with several workers: ``python -m
chatserver.metrics_exporter DIR HOST PORT`` serves the sum of the metrics every worker keeps
in DIR (prometheus-client's multiprocess mode) until the server process is gone.

Its own module, apart from ``metrics.py``: importing the metric definitions here would add
this process's zero values to the sums (a ``livemin`` gauge would read 0).
"""

from __future__ import annotations

import os
import shutil
import sys
import time

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client import multiprocess as mp


def command(directory: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "chatserver.metrics_exporter", directory, host, str(port)]


def export(directory: str, host: str, port: int) -> None:
    registry = CollectorRegistry()
    mp.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    start_http_server(port, host, registry=registry)
    parent = os.getppid()
    while os.getppid() == parent:  # the server (this process's parent) is still there
        time.sleep(0.5)
    shutil.rmtree(directory, ignore_errors=True)  # made by chatserver serve for this run


if __name__ == "__main__":
    export(sys.argv[1], sys.argv[2], int(sys.argv[3]))
