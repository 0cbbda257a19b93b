"""Every benchmark in one command: results and a record of where and when they were measured.

    .venv/bin/python benchmarks/run_all.py [--only NAME ...] [--out benchmarks/results] [--check]
    .venv/bin/python benchmarks/run_all.py --smoke --out /tmp/r   # every script at its --smoke size
    .venv/bin/python benchmarks/run_all.py --render [--out benchmarks/results]   # README table only

Runs each script below one after the other (never two at once: they share these 2 cores),
with its README command, and writes into ``--out``:

* ``NAME.txt``: the script's console output, ``NAME.json`` where the script writes JSON;
* ``run_all.json``: the machine (CPU model, cores, memory, Python, torch, OpenFHE), the commit
  and whether the tree was dirty, and per script the command, start date, wall time, exit code,
  the load average before and after (other jobs on the machine skew every absolute time; the
  ratios each script prints are taken within one process to resist that) and its headline
  line (the last line holding "ratio", "check" or "gap").

Then it rewrites the table between ``<!-- run_all:begin -->`` and ``<!-- run_all:end -->`` in
``benchmarks/README.md`` from ``run_all.json``, and every script's result tables
(``RENDERERS``: ``<!-- run_all:NAME:begin -->`` ... ``<!-- run_all:NAME:end -->``) from
``NAME.json`` with the script's own ``table_markdown`` (the function it prints them with), so
the README and the console cannot disagree (``--render`` alone does only that, from what
``--out`` holds). Tables that no script here produces (the comparison microbenchmark of the
tests, ``./train.sh`` timings, the split sweep) stay hand-written, each with its command and
date. ``--check`` passes ``--check`` to every script and exits 1 when any script failed or
missed its target.

Full sizes take 3-4 hours here (hybrid_accuracy 30-80 minutes by the machine's load, its real-image
run, hybrid_accuracy_real, about 20 more); TenSEAL's
baseline runs only when ``--tenseal-python`` names an interpreter that has it (it is not in the
lock).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Dict, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- run_all:begin -->", "<!-- run_all:end -->"
HEADLINE_WORDS = ("ratio", "check", "gap")
SCRIPT_ENV = {"OMP_NUM_THREADS": "1"}  # one OpenMP thread per process, as every README command runs them


@dataclass(frozen=True)
class Bench:
    """One script: its README arguments and how it takes where to write its JSON (every script
    writes one: the README's tables are rendered from it)."""

    name: str
    args: Sequence[str] = ()
    json_flag: str = "--json"  # a file; "--out": the script writes NAME.json into a folder
    script: Optional[str] = None  # benchmarks/SCRIPT.py when it is not NAME (one script, two tables)
    smoke_args: Sequence[str] = ()  # besides --smoke

    @property
    def file(self) -> str:
        return self.script or self.name


BENCHES = (
    Bench("dp_step_overhead", ["--batch-size", "64", "256", "--repeats", "20"]),
    Bench("plaintext_accuracy", ["--seeds", "0", "1", "2"]),
    Bench("smpc_stage", ["--batch", "64"]),
    Bench("he_head", []),
    Bench("mpc_links", ["--rounds", "3"]),
    Bench("dp_audit", [], json_flag="--out"),
    Bench("hybrid_gradient_error", ["--hiding-bits", "32", "36", "40"]),
    Bench("hybrid_speed", ["--splits", "3", "4", "5", "--steps", "4", "--repeats", "2"]),
    Bench("hybrid_accuracy", ["--seeds", "0", "1", "2", "3", "4"]),
    # the same comparison on real MR slices through the own-data path (benchmarks/real_images.py)
    Bench("hybrid_accuracy_real", ["--seeds", "0", "1", "2", "3", "4", "--plaintext-repeats", "5", "--real-images"],
          script="hybrid_accuracy", smoke_args=["--real-images"]),
)


def _cmd_output(argv: Sequence[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> Dict[str, object]:
    """What the figures were measured on (read once per invocation)."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError):
        pass
    versions = {}
    for dist in ("torch", "crypten", "opacus", "openfhe"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem_gib, "platform": platform.platform(),
            "python": platform.python_version(), "versions": versions,
            "commit": _cmd_output(["git", "rev-parse", "HEAD"]),
            # results/ is what the scripts write: a tree dirty only there ran committed code
            "dirty": bool(_cmd_output(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                       ":(exclude)benchmarks/results"]))}


def headline(stdout: str) -> str:
    lines = [ln.strip() for ln in stdout.splitlines()
             if any(w in ln for w in HEADLINE_WORDS) and not ln.lstrip().startswith("|")]  # not a table row
    return lines[-1] if lines else ""


def run_one(bench: Bench, out: Path, *, smoke: bool, check: bool, extra: Sequence[str] = ()) -> Dict[str, object]:
    argv = [sys.executable, str(ROOT / "benchmarks" / f"{bench.file}.py")]
    argv += ["--smoke", *bench.smoke_args] if smoke else list(bench.args)
    argv += ["--out", str(out)] if bench.json_flag == "--out" else ["--json", str(out / f"{bench.name}.json")]
    if check:
        argv.append("--check")
    argv += list(extra)
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t0 = time.perf_counter()
    print(f"[run_all] {bench.name}: {' '.join(argv[1:])}", flush=True)
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **SCRIPT_ENV})
    seconds = time.perf_counter() - t0
    (out / f"{bench.name}.txt").write_text(proc.stdout)
    if proc.returncode != 0:
        (out / f"{bench.name}.stderr.txt").write_text(proc.stderr)
    # paths as the README shows them: relative to the checkout the scripts ran in
    shown = [os.path.relpath(a, ROOT) if a.startswith(str(ROOT) + os.sep) else a for a in argv[2:]]
    record = {"name": bench.name, "command": " ".join(["benchmarks/" + bench.file + ".py", *shown]),
              "started": started, "seconds": round(seconds, 1), "returncode": proc.returncode,
              "load_before": [round(x, 2) for x in load_before],
              "load_after": [round(x, 2) for x in os.getloadavg()], "headline": headline(proc.stdout)}
    print(f"[run_all] {bench.name}: exit {proc.returncode} after {seconds:.0f} s; {record['headline']}", flush=True)
    return record


def render_table(summary: Dict[str, object]) -> str:
    m = summary["machine"]
    rows = [f"Last `run_all.py` ({'smoke sizes' if summary['smoke'] else 'full sizes'}): {summary['date']}, "
            f"commit `{str(m['commit'])[:10]}`{' (uncommitted changes)' if m['dirty'] else ''}, {m['cpu']}, "
            f"{m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, torch {m['versions'].get('torch')}.",
            "", "| script | command | started (UTC) | commit | minutes | load before / after (1 min) | exit | headline |",
            "|---|---|---|---|---|---|---|---|"]
    for r in summary["runs"]:
        commit = str(r.get("commit", m["commit"]))[:10] + ("+" if r.get("dirty") else "")
        cells = [r["name"], f"`{r['command']}`", r["started"], f"`{commit}`", f"{r['seconds'] / 60:.1f}",
                 f"{r['load_before'][0]:.1f} / {r['load_after'][0]:.1f}", str(r["returncode"]),
                 str(r["headline"]).replace("|", "/")]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


# Scripts whose README table is rendered from their JSON by their own ``table_markdown(result)``
# (the function the script prints its table with, so the two cannot drift apart).
RENDERERS = ("dp_step_overhead", "plaintext_accuracy", "smpc_stage", "he_head", "hybrid_speed", "hybrid_accuracy",
             "hybrid_accuracy_real", "dp_audit", "hybrid_gradient_error", "mpc_links")


def _renderer(name: str):
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    script = next((b.file for b in BENCHES if b.name == name), name)
    return __import__(script).table_markdown


def _replace_block(text: str, begin: str, end: str, body: str, where: Path) -> str:
    if begin not in text or end not in text:
        raise SystemExit(f"{where}: no {begin} ... {end} markers to write the table between")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def render(readme: Path, summary: Optional[Dict[str, object]], results: Optional[Path] = None) -> None:
    """Rewrite the marked tables of ``readme``; refuse a README without the markers a table needs
    (nothing is written then)."""
    text = readme.read_text()
    if summary is not None:
        text = _replace_block(text, BEGIN, END, render_table(summary), readme)
    for name in RENDERERS:
        path = results / f"{name}.json" if results is not None else None
        if path is None or not path.is_file():
            continue
        text = _replace_block(text, f"<!-- run_all:{name}:begin -->", f"<!-- run_all:{name}:end -->",
                              _renderer(name)(json.loads(path.read_text())), readme)
    readme.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", default=None, choices=[b.name for b in BENCHES])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--smoke", action="store_true", help="every script at its --smoke size")
    ap.add_argument("--check", action="store_true", help="scripts' --check; exit 1 on any failure or missed target")
    ap.add_argument("--render", action="store_true", help="only rewrite the README table from --out/run_all.json")
    ap.add_argument("--readme", type=Path, default=None,
                    help=f"the README whose table is rewritten (default {README.relative_to(ROOT)}; with --smoke none "
                         "unless given, so smoke figures never replace measured ones)")
    ap.add_argument("--tenseal-python", default=None,
                    help="an interpreter with tenseal: he_head.py adds TenSEAL's baselines (not in the lock)")
    args = ap.parse_args()
    readme = args.readme or (None if args.smoke else README)
    args.out.mkdir(parents=True, exist_ok=True)
    summary_path = args.out / "run_all.json"
    if args.render:
        # without run_all.json (scripts run on their own) only the per-script tables are rendered
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        render(readme or README, summary, results=args.out)
        return 0
    benches = [b for b in BENCHES if args.only is None or b.name in args.only]
    summary = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "smoke": args.smoke,
               "machine": machine(), "runs": []}
    # --only keeps the other scripts' records of an earlier invocation of the same size (each
    # record carries its own date and commit), so the table always lists every script run.
    kept: Dict[str, Dict[str, object]] = {}
    if summary_path.is_file():
        earlier = json.loads(summary_path.read_text())
        if earlier.get("smoke") == args.smoke:
            kept = {r["name"]: r for r in earlier.get("runs", [])}
    for bench in benches:
        extra = ["--tenseal-python", args.tenseal_python] if bench.name == "he_head" and args.tenseal_python else []
        record = run_one(bench, args.out, smoke=args.smoke, check=args.check, extra=extra)
        kept[bench.name] = {**record, "commit": summary["machine"]["commit"], "dirty": summary["machine"]["dirty"]}
        summary["runs"] = [kept[b.name] for b in BENCHES if b.name in kept]
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")  # after each: a stopped run keeps the rest
    if readme is not None:
        render(readme, summary, results=args.out)
    failed = [r["name"] for r in summary["runs"] if r["name"] in {b.name for b in benches} and r["returncode"] != 0]
    print(f"[run_all] {len(benches) - len(failed)} of {len(benches)} scripts exited 0"
          + (f"; failed or missed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
