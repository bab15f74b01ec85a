"""Rows, the markdown tables, the JSON file, machine facts and the docs section."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import sqlite3
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

# A run is named when the hypervisor took at least this share of the machine's CPU time.
STEAL_NOTE_SHARE = 0.05
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DOCS_FILE = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
DOCS_START = "<!-- bench:results:start -->"
DOCS_END = "<!-- bench:results:end -->"
PACKAGES = (
    "chatserver",
    "litestar",
    "uvicorn",
    "granian",
    "uvloop",
    "msgspec",
    "asyncpg",
    "redis",
)


@dataclass
class Row:
    """One line of a results table.

    ``kind`` picks the table: ``http`` (wrk runs and ceilings), ``big`` (one call on a
    small and on a big data set: big-inbox, conversations),
    ``other`` (streams, memory, start-up: a measure and its value).
    """

    scenario: str
    case: str
    kind: str
    metrics: dict[str, Any] = field(default_factory=dict)
    errors: int = 0
    error_detail: list[str] = field(default_factory=list)
    target: str = ""
    met: bool | None = None
    notes: list[str] = field(default_factory=list)


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def pct(value: Any) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.0f} %" if value >= 0.1 else f"{100 * value:.2g} %"


def _met(row: Row) -> str:
    if row.met is None:
        return ""
    return "met" if row.met else "**not met**"


def _errors(row: Row) -> str:
    return str(row.errors) if row.errors == 0 else f"**{row.errors}**"


def markdown(rows: list[Row], info: dict[str, Any]) -> str:
    out: list[str] = []
    settings = info["settings"]
    machine = info["machine"]
    out.append(
        f"Run {info['started_at']} — `{settings['command']}` — "
        f"{machine['cores']} cores, {machine['cpu_model']}, {machine['memory_gib']} GiB RAM, "
        f"Linux {machine['kernel']}, Python {machine['python']}"
    )
    out.append("")
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    out.append(f"Versions: {versions}")
    out.append("")
    out.append(
        f"Settings: database {settings['db']}, redis {'on' if settings['redis'] else 'off'}, "
        f"{settings['workers']} worker(s), {settings['connections']} connections / "
        f"{settings['wrk_threads']} wrk threads, {settings['duration_s']:g} s per run after "
        f"{settings['warmup_s']:g} s warm-up, {settings['users']} users; "
        f"server command `{' '.join(settings['server_command'])}`"
    )
    for note in settings.get("notes", []):
        out.append("")
        out.append(f"Note: {note}")

    http = [r for r in rows if r.kind == "http"]
    if http:
        out += [
            "",
            "| Scenario | req/s | p50 ms | p99 ms | vs raw ASGI | vs Litestar route "
            "| vs one-query (reads) / one-insert (send) route | errors | target | |",
            "|---|--:|--:|--:|--:|--:|--:|--:|---|---|",
        ]
        for r in http:
            m = r.metrics
            name = r.scenario if not r.case else f"{r.scenario} ({r.case})"
            out.append(
                f"| {name} | {_num(m.get('rps'), 0)} | {_num(m.get('p50_ms'), 2)} "
                f"| {_num(m.get('p99_ms'), 2)} | {pct(m.get('vs_raw'))} "
                f"| {pct(m.get('vs_litestar'))} | {pct(m.get('vs_query', m.get('vs_insert')))} "
                f"| {_errors(r)} | {r.target} | {_met(r)} |"
            )
    big = [r for r in rows if r.kind == "big"]
    if big:
        out += [
            "",
            "| Call on little and on much data | p50 ms, small | p50 ms, big | ratio | "
            "p99 ms, big | req/s, big | errors | target | |",
            "|---|--:|--:|--:|--:|--:|--:|---|---|",
        ]
        for r in big:
            m = r.metrics
            out.append(
                f"| {r.scenario}: {r.case} | {_num(m.get('small_p50_ms'), 2)} "
                f"| {_num(m.get('big_p50_ms'), 2)} "
                f"| {_num(m.get('ratio'), 2)}× | {_num(m.get('big_p99_ms'), 2)} "
                f"| {_num(m.get('big_rps'), 0)} | {_errors(r)} | {r.target} | {_met(r)} |"
            )
    other = [r for r in rows if r.kind == "other"]
    if other:
        out += [
            "",
            "| Scenario | measure | value | errors | target | |",
            "|---|---|--:|--:|---|---|",
        ]
        for r in other:
            out.append(
                f"| {r.scenario} | {r.case} | {r.metrics.get('display', '')} | {_errors(r)} "
                f"| {r.target} | {_met(r)} |"
            )
    notes = [(r, n) for r in rows for n in r.notes]
    details = [(r, d) for r in rows for d in r.error_detail]
    stolen = _steal_note(rows)
    if notes or details or stolen:
        out.append("")
    if stolen:
        out.append(stolen)
    for r, n in notes:
        out.append(f"- {r.scenario}{f' ({r.case})' if r.case else ''}: {n}")
    for r, d in details:
        first, _, rest = d.partition("\n")
        out.append(f"- **error** {r.scenario}{f' ({r.case})' if r.case else ''}: {first}")
        if rest.strip():
            out += ["", "  ```", *(f"  {line}" for line in rest.splitlines()[-15:]), "  ```"]
    return "\n".join(out) + "\n"


def _steal_note(rows: list[Row]) -> str:
    """One line naming the rows whose runs the hypervisor took a noticeable share of."""
    hit = [
        f"{_label(r)} {100 * r.metrics['machine_steal_share']:.0f} %"
        for r in rows
        if r.metrics.get("machine_steal_share", 0) >= STEAL_NOTE_SHARE
    ]
    if not hit:
        return ""
    return (
        "- the hypervisor took this share of the machine's CPU time (steal; its pauses are in "
        f"the latencies) during: {', '.join(hit)}"
    )


def _label(row: Row) -> str:
    return f"{row.scenario} ({row.case})" if row.case else row.scenario


def machine_info() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": mem_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "hostname": platform.node(),
    }


def versions(extra: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["websockets"] = metadata.version("websockets")
    out["sqlite"] = sqlite3.sqlite_version
    out.update(extra)
    return out


def save(rows: list[Row], info: dict[str, Any], table: str) -> tuple[Path, Path]:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    settings = info["settings"]
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = (
        f"{stamp}-{settings['db']}-w{settings['workers']}"
        f"{'-redis' if settings['redis'] else ''}{'-quick' if settings['quick'] else ''}"
    )
    json_path = RESULTS_DIR / f"{name}.json"
    md_path = RESULTS_DIR / f"{name}.md"
    payload = {**info, "rows": [asdict(r) for r in rows]}
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    md_path.write_text(table)
    return json_path, md_path


def write_docs(table: str, docs: Path = DOCS_FILE) -> None:
    """Replace the "Latest results" block of docs/performance.md with ``table``."""
    text = docs.read_text()
    if DOCS_START not in text or DOCS_END not in text:
        raise RuntimeError(f"{docs} has no {DOCS_START} … {DOCS_END} block to rewrite")
    block = f"{DOCS_START}\n{table}{DOCS_END}"
    pattern = re.compile(re.escape(DOCS_START) + ".*?" + re.escape(DOCS_END), re.DOTALL)
    docs.write_text(pattern.sub(lambda _: block, text, count=1))


def command_line() -> str:
    return " ".join(["python -m bench", *sys.argv[1:]])
