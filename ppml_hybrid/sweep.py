"""The table at the end of a Hydra multirun: one row per job, and the best split per profile.

Registered as a Hydra callback in ``conf/train.yaml``; ``on_multirun_end`` reads every job's
``metrics.json`` under the sweep directory and writes ``summary.md`` and ``summary.json``
beside them (and logs the table). A job that failed with a project error left ``error.json``
(:func:`record_failure`) and is listed with that error; the multirun then exits with the first
failed job's exit code, after the summary is written.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)

PROFILES = ("lan", "wan", "wan_slow")
ERROR_FILE = "error.json"


def record_failure(output_dir: str, exc: Exception) -> None:
    """A failed run's error in its folder (type, message and exit code only): the multirun summary
    reads it, and nobody mistakes the folder for a result."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / ERROR_FILE).write_text(json.dumps({"type": type(exc).__name__, "message": str(exc),
                                              "exit_code": getattr(exc, "exit_code", 1)}, indent=2) + "\n")


def summarize(sweep_dir: Path) -> Dict[str, Any]:
    """Rows (one per job directory) and the best split per model and network profile."""
    rows: List[Dict[str, Any]] = []
    for job in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: p.name):
        path = job / "metrics.json"
        error = job / ERROR_FILE
        if error.is_file():
            e = json.loads(error.read_text())
            rows.append({"job": job.name, "status": f"failed: {e['type']}: {e['message']}",
                         "exit_code": e.get("exit_code")})
            continue
        if not path.is_file():
            rows.append({"job": job.name, "status": "failed (no metrics.json)"})
            continue
        m = json.loads(path.read_text())
        traffic = m.get("mpc_traffic_per_step") or []
        rows.append({
            "job": job.name,
            "status": "ok",
            "mode": m.get("mode"),
            "model": m.get("model"),
            "split_layer": m.get("split_layer"),
            "steps": m.get("steps"),
            "time_per_step_s": m.get("time_per_step_s"),
            "time_per_epoch_s": m.get("time_per_epoch_s"),
            "projected_epoch_s": m.get("projected_epoch_s") or {},
            "bytes_per_step": max((t["bytes_sent"] for t in traffic), default=None),
            "rounds_per_step": max((t["rounds"] for t in traffic), default=None),
            "epsilon": m.get("epsilon"),
            "test_accuracy": (m.get("test") or {}).get("accuracy"),
        })
    best: Dict[str, Dict[str, Optional[int]]] = {}
    for row in rows:
        if row.get("status") != "ok" or row.get("mode") != "hybrid":
            continue
        for profile, seconds in row["projected_epoch_s"].items():
            key = f"{row['model']}/{profile}"
            current = best.get(key)
            if current is None or seconds < current["projected_epoch_s"]:
                best[key] = {"split_layer": row["split_layer"], "projected_epoch_s": seconds}
    return {"rows": rows, "best_split": best}


def render_markdown(summary: Dict[str, Any]) -> str:
    head = ["job", "mode", "model", "split", "steps", "s/step", *[f"epoch s ({p})" for p in PROFILES],
            "MB/step", "rounds/step", "epsilon", "test acc"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary["rows"]:
        if r.get("status") != "ok":
            lines.append(f"| {r['job']} | {r['status']} |" + " |" * (len(head) - 2))
            continue
        proj = r["projected_epoch_s"]
        cells = [r["job"], r["mode"], r["model"], r["split_layer"], r["steps"],
                 _fmt(r["time_per_step_s"]), *[_fmt(proj.get(p)) for p in PROFILES],
                 _fmt(None if r["bytes_per_step"] is None else r["bytes_per_step"] / 1e6),
                 _fmt(r["rounds_per_step"], 0), _fmt(r["epsilon"], 3), _fmt(r["test_accuracy"], 4)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if summary["best_split"]:
        lines += ["", "Best split (lowest projected DP epoch time):", ""]
        for key, b in sorted(summary["best_split"].items()):
            lines.append(f"- {key}: split_layer={b['split_layer']} ({b['projected_epoch_s']:.1f} s per epoch)")
    return "\n".join(lines) + "\n"


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


class SweepSummary(Callback):
    """Hydra callback: write the sweep's summary table when a multirun ends."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        summary = summarize(sweep_dir)
        (sweep_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        table = render_markdown(summary)
        from ppml_hybrid.report import write_sweep_plot

        image = write_sweep_plot(summary, sweep_dir)
        (sweep_dir / "summary.md").write_text(table + (f"\n![{image}]({image})\n" if image else ""))
        log.info("sweep summary (%s):\n%s", sweep_dir / "summary.md", table)
        codes = [r["exit_code"] for r in summary["rows"] if r.get("exit_code")]
        if codes:
            log.error("%d of %d jobs failed (see summary.md)", len(codes), len(summary["rows"]))
            sys.exit(codes[0])
