"""SMPC conv stage (blocks 1..3 of the default model): ours vs CrypTen's own way, same run.

Forward + backward (weight gradients of every conv and activation parameter; no opening) of
the three conv blocks at batch B (default 64, 32x32 inputs), 2 parties + TTP dealer process,
one thread per process, fixed point f=16. In ONE launch of the parties it runs:

* ours, ReLU (relu_cnn blocks 1..3: conv, ReLU, max pool) with public weights;
* CrypTen's own way on the same layers: ``crypten.nn`` Conv2d/ReLU/MaxPool2d built directly,
  ``encrypt()`` (weights secret-shared by party 0), CrypTen autograd, TTP provider; once in
  the model's order (kept for continuity) and once as a competent CrypTen user rewrites it
  (max pooling before ReLU: the ReLU's comparisons on a quarter of the values). The target
  ratios use the rewritten one;
* both again with the polynomial activation (poly_cnn blocks 1..3: conv, a*x^2+b*x, avg pool).

Traffic is counted by our transport wrapper in every case (sent + received bytes per party,
both channels: other parties and the dealer; rounds = communicator calls). Per-image figures
divide by B. Prints the per-layer table of our ReLU run, the totals and the target ratios.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/smpc_stage.py [--batch 64] [--json out.json]
    .venv/bin/python benchmarks/smpc_stage.py --smoke    # batch 4: every code path (the test suite runs it)
    .venv/bin/python benchmarks/smpc_stage.py --check    # exit 1 when a target is missed

Each model gets the delta of its own output shape (relu_cnn and poly_cnn differ in width).
``table_markdown`` renders the JSON (printed here; ``run_all.py`` writes the README's tables with it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Tuple

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ppml_hybrid.config import ModelConfig, SMPCConfig, from_mapping  # noqa: E402
from ppml_hybrid.model.plaintext import build_model  # noqa: E402
from ppml_hybrid.smpc_stage.baseline import CrypTenStep  # noqa: E402
from ppml_hybrid.smpc_stage.launcher import run_parties  # noqa: E402
from ppml_hybrid.smpc_stage.programs import PartyInputs, StageStep  # noqa: E402

IMAGE = 32
STOP = 3


@dataclass(frozen=True)
class Suite:
    """Runs several programs one after the other in the same party processes; program i gets
    ``inputs[keys[i]]`` (its model's rows and delta)."""

    programs: Tuple[Any, ...]
    keys: Tuple[str, ...]

    def __call__(self, ctx: Any, inputs: Any) -> Tuple[Any, ...]:
        return tuple(p(ctx, inputs[k]) for p, k in zip(self.programs, self.keys))


def load_model(name: str) -> ModelConfig:
    return from_mapping(ModelConfig, yaml.safe_load((ROOT / "conf" / "model" / f"{name}.yaml").read_text()), "model")


RUN_NAMES = {"ours-relu": "ours, ReLU", "crypten-relu": "CrypTen, ReLU (as written)",
             "crypten-relu-rewritten": "CrypTen, ReLU (rewritten: pool before ReLU)", "ours-poly": "ours, poly",
             "crypten-poly": "CrypTen, poly"}


def table_markdown(result: Dict[str, Any]) -> str:
    """The totals, the target ratios and the per-layer table of our ReLU run, from this script's JSON."""
    lines = ["| run | fwd+bwd s | fwd s | bwd s | MB/image (max party) | rounds | of which dealer MB/image |",
             "|---|---|---|---|---|---|---|"]
    for name, s in result["summary"].items():
        lines.append(f"| {RUN_NAMES.get(name, name)} | {s['seconds']:.2f} | {s['forward_s']:.2f} | "
                     f"{s['backward_s']:.2f} | {s['bytes_per_image_max_party'] / 1e6:.2f} | {s['rounds_max_party']} | "
                     f"{s['dealer_bytes_per_image'] / 1e6:.2f} |")
    r = result["ratios"]
    lines += ["", f"Ratios against the rewritten CrypTen (targets): ReLU time {r['relu_time_crypten_over_ours']:.1f}x "
              f"(>= 1), ReLU bytes {r['relu_bytes_crypten_over_ours']:.1f}x (>= 1), ReLU rounds "
              f"{r['relu_rounds_crypten_over_ours']:.1f}x; CrypTen ReLU bytes / ours poly bytes "
              f"{r['crypten_relu_bytes_over_ours_poly']:.1f}x (>= 10); poly bytes CrypTen / ours "
              f"{r['poly_bytes_crypten_over_ours']:.1f}x. Against CrypTen as written: ReLU time "
              f"{r['relu_time_crypten_as_written_over_ours']:.1f}x, bytes {r['relu_bytes_crypten_as_written_over_ours']:.1f}x "
              f"(the rewrite saves CrypTen {r['crypten_rewrite_saves_bytes']:.0%} of its bytes).",
              "", f"Per layer, ours with ReLU (party 0; bytes = sent + received, both channels; batch {result['batch']}):",
              "", "| layer | direction | rounds | bytes/image | dealer rounds | s |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in result["layers"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--smoke", action="store_true", help="batch 4: every code path, seconds")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    if args.smoke:
        args.batch = 4
    torch.set_num_threads(1)
    parties = 2
    per = args.batch // parties
    g = torch.Generator().manual_seed(0)
    rows = [torch.randn(per, 1, IMAGE, IMAGE, generator=g) for _ in range(parties)]
    programs, names, keys = [], [], []
    inputs = [{} for _ in range(parties)]
    for label, model_name in (("relu", "relu_cnn"), ("poly", "poly_cnn")):
        model = load_model(model_name)
        net = build_model(model, image_size=IMAGE, seed=0)
        sd = net.state_dict()
        programs += [StageStep(model=model, state_dict=sd, image_size=IMAGE, stop=STOP),
                     CrypTenStep(model=model, state_dict=sd, image_size=IMAGE, stop=STOP)]
        names += [f"ours-{label}", f"crypten-{label}"]
        keys += [label, label]
        if label == "relu":  # the rewrite changes nothing without max pooling after ReLU
            programs.append(CrypTenStep(model=model, state_dict=sd, image_size=IMAGE, stop=STOP, rewritten=True))
            names.append("crypten-relu-rewritten")
            keys.append(label)
        out_shape = (args.batch,) + tuple(net.forward_blocks(torch.zeros(1, 1, IMAGE, IMAGE), 0, STOP).shape[1:])
        delta = torch.randn(out_shape, generator=g) * 0.01
        for r in range(parties):
            inputs[r][label] = PartyInputs(rows=rows[r], delta=delta if r == 0 else None)
    run = run_parties(smpc=SMPCConfig(parties=parties, master_port=0, timeout_s=600),
                      program=Suite(tuple(programs), tuple(keys)), party_inputs=inputs)
    B = args.batch
    summary = {}
    for i, name in enumerate(names):
        reps = [run.results[r][i] for r in range(parties)]
        summary[name] = {
            "seconds": max(r.seconds for r in reps),
            "forward_s": max(r.forward_s for r in reps),
            "backward_s": max(r.backward_s for r in reps),
            "bytes_per_image_max_party": max(r.traffic.bytes_total for r in reps) / B,
            "bytes_sent_per_image_max_party": max(r.traffic.bytes_sent for r in reps) / B,
            "rounds_max_party": max(r.traffic.rounds for r in reps),
            "dealer_bytes_per_image": reps[0].traffic.dealer.bytes_total / B,
        }
    layer_rows = []
    for c in run.results[0][0].costs:
        t = c.traffic
        layer_rows.append([c.layer, c.direction, t.rounds, round(t.bytes_total / B), t.dealer.rounds,
                           round(c.seconds, 3)])
    o, op = summary["ours-relu"], summary["ours-poly"]
    c, cw = summary["crypten-relu"], summary["crypten-relu-rewritten"]
    ratios = {
        "relu_time_crypten_over_ours": cw["seconds"] / o["seconds"],
        "relu_bytes_crypten_over_ours": cw["bytes_per_image_max_party"] / o["bytes_per_image_max_party"],
        "relu_rounds_crypten_over_ours": cw["rounds_max_party"] / o["rounds_max_party"],
        "crypten_relu_bytes_over_ours_poly": cw["bytes_per_image_max_party"] / op["bytes_per_image_max_party"],
        "poly_bytes_crypten_over_ours": summary["crypten-poly"]["bytes_per_image_max_party"] / op["bytes_per_image_max_party"],
        "relu_time_crypten_as_written_over_ours": c["seconds"] / o["seconds"],
        "relu_bytes_crypten_as_written_over_ours": c["bytes_per_image_max_party"] / o["bytes_per_image_max_party"],
        "crypten_rewrite_saves_bytes": 1 - cw["bytes_per_image_max_party"] / c["bytes_per_image_max_party"],
    }
    linear_free = all(r[2] == 0 and r[3] == 0 for r in layer_rows
                      if r[0].endswith((".conv",)) and r[1] in ("forward", "backward"))
    targets = {"conv forward/backward-delta free": linear_free,
               "ReLU no slower": ratios["relu_time_crypten_over_ours"] >= 1.0,
               "ReLU no more bytes": ratios["relu_bytes_crypten_over_ours"] >= 1.0,
               "poly >= 10x fewer bytes than CrypTen ReLU": ratios["crypten_relu_bytes_over_ours_poly"] >= 10.0}
    result = {"batch": B, "image_size": IMAGE, "parties": parties, "summary": summary, "ratios": ratios,
              "targets": targets, "layers": layer_rows}
    print(f"batch {B}, {IMAGE}x{IMAGE}, blocks 1..{STOP}, {parties} parties + TTP dealer, one thread each\n")
    print(table_markdown(result))
    print("\nratios:", json.dumps({k: round(v, 2) for k, v in ratios.items()}))
    print("targets:", " | ".join(f"{k}: {v}" for k, v in targets.items()))
    print(f"ratio check against CrypTen rewritten: ReLU bytes {ratios['relu_bytes_crypten_over_ours']:.1f}x, time "
          f"{ratios['relu_time_crypten_over_ours']:.1f}x; CrypTen ReLU bytes / ours poly "
          f"{ratios['crypten_relu_bytes_over_ours_poly']:.1f}x (>= 10): "
          f"{'met' if all(targets.values()) else 'missed: ' + ', '.join(k for k, v in targets.items() if not v)}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 1 if args.check and not all(targets.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
