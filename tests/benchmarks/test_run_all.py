"""benchmarks/run_all.py: one command runs the scripts, records where and when, and writes the table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN_ALL = ROOT / "benchmarks" / "run_all.py"


def test_run_all_records_the_machine_and_renders_the_table(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nbefore\n<!-- run_all:begin -->\nold table\n<!-- run_all:end -->\nmiddle\n"
                      "<!-- run_all:plaintext_accuracy:begin -->\nold plain\n<!-- run_all:plaintext_accuracy:end -->\n"
                      "<!-- run_all:hybrid_speed:begin -->\nold speed\n<!-- run_all:hybrid_speed:end -->\n"
                      "<!-- run_all:hybrid_accuracy:begin -->\nold accuracy\n<!-- run_all:hybrid_accuracy:end -->\nafter\n")
    out = subprocess.run([sys.executable, str(RUN_ALL), "--smoke", "--only", "plaintext_accuracy", "hybrid_speed",
                          "hybrid_accuracy", "--out", str(tmp_path / "r"), "--readme", str(readme)],
                         capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    summary = json.loads((tmp_path / "r" / "run_all.json").read_text())
    assert summary["smoke"] is True
    assert summary["machine"]["cores"] >= 1 and summary["machine"]["cpu"] and len(summary["machine"]["commit"]) == 40
    run, speed, accuracy = summary["runs"]
    assert run["name"] == "plaintext_accuracy" and run["returncode"] == 0
    assert speed["name"] == "hybrid_speed" and speed["returncode"] == 0 and "ratio check" in speed["headline"]
    assert accuracy["name"] == "hybrid_accuracy" and accuracy["returncode"] == 0 and "gap check" in accuracy["headline"]
    assert "--smoke" in run["command"] and len(run["load_before"]) == 3 and run["seconds"] > 0
    printed = (tmp_path / "r" / "plaintext_accuracy.txt").read_text()
    assert run["headline"] and run["headline"] in printed  # the script's own summary line
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# Benchmarks\n\nbefore\n") and text.endswith("after\n")
    assert "| plaintext_accuracy | `benchmarks/plaintext_accuracy.py --smoke --json " in text
    assert "old plain" not in text and "| DP-SGD | " in text and "intensity-statistics baseline" in text
    # the accuracy table is rendered from the script's own JSON: its seeds, both arms, the gap
    assert "old accuracy" not in text and "| seed | hybrid | plaintext_same_epsilon |" in text
    assert "| 0 | " in text and "95% Welch interval" in text and "\nmiddle\n" in text
    # the speed table likewise, through the function the script prints its own table with
    assert "old speed" not in text and "| 5 | " in text and "(c) best split:" in text
    assert "smoke sizes" in text and summary["machine"]["commit"][:10] in text


def test_render_refuses_a_readme_without_markers(tmp_path):
    (tmp_path / "run_all.json").write_text(json.dumps({"date": "d", "smoke": True, "runs": [], "machine": {
        "commit": "c", "dirty": False, "cpu": "x", "cores": 2, "memory_gib": 1, "python": "3", "versions": {}}}))
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    out = subprocess.run([sys.executable, str(RUN_ALL), "--render", "--out", str(tmp_path), "--readme", str(readme)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode != 0 and "markers" in out.stderr
    assert readme.read_text() == "# no markers\n"


def test_every_script_with_a_smoke_size_is_in_run_all():
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("run_all", RUN_ALL)
    module = module_from_spec(spec)
    sys.modules["run_all"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["run_all"]
    listed = {b.name for b in module.BENCHES}
    with_smoke = {p.stem for p in (ROOT / "benchmarks").glob("*.py")
                  if '"--smoke"' in p.read_text() and p.stem != "run_all"}
    assert with_smoke <= listed, with_smoke - listed


def test_render_writes_each_scripts_table_from_its_committed_json(tmp_path):
    """--render alone: every renderer's table from the JSON in --out (here the committed results)."""
    import shutil

    rendered = ("he_head", "hybrid_accuracy", "hybrid_accuracy_real", "mpc_links", "dp_audit", "dp_step_overhead",
                "plaintext_accuracy", "smpc_stage", "hybrid_gradient_error")
    for name in rendered:
        shutil.copy(ROOT / "benchmarks" / "results" / f"{name}.json", tmp_path / f"{name}.json")
    readme = tmp_path / "README.md"
    readme.write_text("# B\n" + "".join(f"<!-- run_all:{n}:begin -->\nold\n<!-- run_all:{n}:end -->\n" for n in rendered)
                      + "<!-- run_all:hybrid_speed:begin -->\nkept\n<!-- run_all:hybrid_speed:end -->\n")
    out = subprocess.run([sys.executable, str(RUN_ALL), "--render", "--out", str(tmp_path), "--readme", str(readme)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    text = readme.read_text()
    head = json.loads((tmp_path / "he_head.json").read_text())
    ours = head["runs"][0]
    assert "old" not in text and "kept" in text  # no hybrid_speed.json there: its block is left alone
    assert f"| {ours['batch']} | {ours['groups']} | {ours['forward_s']:.2f} |" in text
    assert f"{head['tenseal_batched']['per_sample_s'] / ours['per_sample_s']:.1f}x ours" in text
    assert text.count("| seed | hybrid | plaintext_same_epsilon |") == 2  # demo and real images, one renderer
    assert "paired by seed" in text and "| epsilon (delta 1e-5) | 6.57 |" in text
    links = json.loads((tmp_path / "mpc_links.json").read_text())
    assert f"| 8 | {links[0]['gloo_ms']:.3g} | {links[0]['links_ms']:.3g} | {links[0]['ratio']:.2f}x" in text
    audit = json.loads((tmp_path / "dp_audit.json").read_text())["audit"]
    assert f"below the accounted {audit['accounted_epsilon']:.2f}" in text
    dso = json.loads((tmp_path / "dp_step_overhead.json").read_text())["rows"][0]
    assert f"| {dso['batch']} | {dso['median_ms']['non-private']:.1f} ms |" in text
    acc = json.loads((tmp_path / "plaintext_accuracy.json").read_text())
    assert f"| DP-SGD | {acc['dp']['mean']:.1%} (" in text
    stage = json.loads((tmp_path / "smpc_stage.json").read_text())
    assert f"ReLU bytes {stage['ratios']['relu_bytes_crypten_over_ours']:.1f}x (>= 1)" in text
    assert "| block1.conv | forward | 0 | 0 | 0 |" in text
    err = json.loads((tmp_path / "hybrid_gradient_error.json").read_text())
    assert f"**{err['clipped']['error_norm'] / err['dp_noise_norm']:.3%}**" in text
