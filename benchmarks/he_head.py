"""HE head forward+backward time per sample at batch 256 on the default model (split 3).

The head: the default model's dense blocks (relu_cnn today: 256 -> 32 with a*x^2 + b*x, 32 -> 2;
the shapes are read from the model, never assumed), 128-bit
parameters derived by the project (HEStd_128_classic, FLEXIBLEAUTO, depth 5, ring 2^14), one
thread. In the same run it measures:

* the chosen packing (G = 32 features per ciphertext at batch 256) and samples-in-slots (G = 1),
  plus a small batch (16, G = 512);
* the op-count floor: counts of ct-pt multiplies (scalar for G = 1, diagonal plaintexts for
  G > 1), plaintext encodings, additions, ct-ct multiplies, rotations and rescales derived
  from the layer shapes and the packing by the formulas in ``floor_counts`` (not from the
  code's counters), times each op's cost measured here at the level it runs at;
* TenSEAL (benchmarks/he_tenseal_baseline.py, run in a separate venv given by
  --tenseal-python; skipped when absent): batched, the batch in the slots with one CKKSVector
  per feature (what a competent TenSEAL user writes; the headline ratio), and CKKSVector.mm one
  sample at a time (kept for continuity with the first figures: a straw man, 512 of 8,192 slots).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/he_head.py --tenseal-python /tmp/ts/bin/python
    .venv/bin/python benchmarks/he_head.py --smoke   # the test suite runs this (insecure ring, batch 8)

Prints a table and ``ratio`` lines; ``--json PATH`` also writes the figures; ``--check`` exits 1
when the head at the default batch runs slower than MAX_VS_FLOOR times its op-count floor.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ppml_hybrid.config import HEConfig, ModelConfig, from_mapping  # noqa: E402
from ppml_hybrid.he_stage import (  # noqa: E402
    HEHead, build_context, choose_layout, derive_params, encrypt_batch, load_public_material,
)
from ppml_hybrid.he_stage.keys import generate_keys  # noqa: E402 - hazmat: the benchmark plays K
from ppml_hybrid.model import block_shapes, build_model  # noqa: E402

log = logging.getLogger("he_head")


# ----------------------------------------------------------------- analytic op counts


def _best_baby(g: int, k_in: int, k_out: int) -> int:
    opts = [1 << e for e in range(g.bit_length())]
    return min(opts, key=lambda n1: (k_in * (n1 - 1) + k_out * (math.ceil(g / n1) - 1), -n1))


def product_counts(n_in: int, n_out: int, g: int, terms: int = 1) -> dict:
    """One dense n_out x n_in product (``terms`` inputs of n_in features) under G groups.

    G = 1: n_in * n_out scalar multiply-accumulates (EvalLinearWSum), no rotation.
    G > 1: K = ceil(n / G) ciphertexts; block (j, k) has R_j valid rows and C_k valid columns,
    so min(G, R_j + C_k - 1) nonzero diagonals, one plaintext encoding + ct-pt multiply + add
    each; baby-step/giant-step rotations K_in * (n1 - 1) per term (hoisted) + K_out * (ceil(G / n1)
    - 1) (plain), n1 the power of two minimising them.
    """
    if g == 1:
        return {"mac": terms * n_in * n_out}
    k_in, k_out = math.ceil(n_in / g), math.ceil(n_out / g)
    rows = [min(g, n_out - j * g) for j in range(k_out)]
    cols = [min(g, n_in - k * g) for k in range(k_in)]
    diags = terms * sum(min(g, r + c - 1) for r in rows for c in cols)
    n_r = min(g, max(rows) + max(cols) - 1)
    n1 = _best_baby(n_r if n_r < g else g, terms * k_in, k_out)
    baby = terms * k_in * (min(n1, n_r) - 1)  # hoisted: one decomposition per input ciphertext
    giant = k_out * (math.ceil(n_r / n1) - 1)
    return {"ptmul": diags, "encode": diags + k_out, "add": diags, "rot_hoisted": baby, "rot": giant}


MAX_VS_FLOOR = 2.0  # the head's time over its op-count floor (1.3-1.5 measured)


def floor_counts(g: int, *, n_in: int, hidden: int, classes: int) -> dict:
    """Every op of forward + backward of the default head, by the level it runs at."""
    k_h = math.ceil(hidden / g)
    fwd4 = product_counts(n_in, hidden, g)  # x4 = W4 a + c4, inputs fresh (level 0)
    fwd5 = product_counts(hidden, classes, g, terms=2)  # z = [aW5, bW5][x4^2, x4] (level 1-2)
    bwd5 = [product_counts(classes, hidden, g), product_counts(classes, hidden, g)]  # dh4, g (level 0)
    bwd4 = product_counts(hidden, n_in, g)  # da = W4^T dx4 (level 2)
    elementwise = {
        1: {"ctmul": 2 * k_h, "smul": 3 * k_h, "add": 2 * k_h},  # x4^2, x4*g; a*x4^2, b*x4, b*dh4
        2: {"rescale": 3 * k_h},  # x4^2 and x4 before W5, dx4 before W4^T
    }
    by_level = {0: {}, 1: {}, 2: {}}
    for lvl, c in [(0, fwd4), (1, fwd5), (0, bwd5[0]), (0, bwd5[1]), (2, bwd4)]:
        for k, v in c.items():
            by_level[lvl][k] = by_level[lvl].get(k, 0) + v
    for lvl, c in elementwise.items():
        for k, v in c.items():
            by_level[lvl][k] = by_level[lvl].get(k, 0) + v
    return by_level


# ----------------------------------------------------------------- op costs, measured


def measure_op_costs(cc, pk, levels=(0, 1, 2), reps=8) -> dict:
    """Seconds per op at each level (ciphertexts taken down by scalar multiplies)."""
    slots = cc.GetRingDimension() // 2
    rng = np.random.default_rng(0)
    order = 2 * cc.GetRingDimension()
    costs = {}
    from ppml_hybrid.he_stage.linear import rescaled

    def timed(fn, n=reps):
        fn()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n

    for lvl in levels:
        cts = []
        for _ in range(32):
            c = cc.Encrypt(pk, cc.MakeCKKSPackedPlaintext(rng.standard_normal(slots)))
            for _ in range(lvl):
                c = rescaled(cc, cc.EvalMult(c, 0.9))
            cts.append(c)
        c, d = cts[0], cts[1]
        vec = rng.standard_normal(slots)
        pt = cc.MakeCKKSPackedPlaintext(vec, 1, c.GetLevel())
        prod = cc.EvalMult(c, d)
        key = next(iter(sorted(int(i) for i in [256])))
        w = list(rng.standard_normal(32))
        costs[lvl] = {
            "mac": timed(lambda: cc.EvalLinearWSum(cts, w), 3) / 32,
            "encode": timed(lambda: cc.MakeCKKSPackedPlaintext(vec, 1, c.GetLevel())),
            "ptmul": timed(lambda: cc.EvalMult(c, pt)),
            "add": timed(lambda: cc.EvalAddInPlace(cc.EvalAdd(c, d), d)) / 2,
            "smul": timed(lambda: cc.EvalMult(c, 0.37)),
            "ctmul": timed(lambda: cc.EvalMult(c, d), 4),
            "rot": timed(lambda: cc.EvalRotate(c, key), 4),
            "rescale": timed(lambda: rescaled(cc, prod)),
        }
        pre = cc.EvalFastRotationPrecompute(c)
        costs[lvl]["rot_hoisted"] = timed(lambda: cc.EvalFastRotation(c, key, order, pre), 4)
    return costs


def floor_seconds(counts: dict, costs: dict) -> float:
    return sum(n * costs[lvl][op] for lvl, ops in counts.items() for op, n in ops.items())


# ----------------------------------------------------------------- the head, timed


def run_head(*, model, params, ctx_cache, batch, max_groups, image_size=32):
    ctx = ctx_cache
    layout = choose_layout(slots=ctx.info.slots, batch_capacity=batch, max_groups=max_groups)
    head = HEHead(model=model, split_layer=3, image_size=image_size, layout=layout)
    t0 = time.perf_counter()
    secret, public = generate_keys(context=ctx, layout=layout, rotation_indices=head.rotation_indices)
    keygen_s = time.perf_counter() - t0
    ev = load_public_material(material=public)
    tm = build_model(model, image_size=image_size, seed=0)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((batch, head.n_inputs)) * 0.5
    dz = rng.standard_normal((batch, head.n_logits)) * 0.5
    t0 = time.perf_counter()
    enc_a = encrypt_batch(cc=ev.cc, public_key=ev.public_key, layout=layout, values=a)
    enc_s = time.perf_counter() - t0
    enc_dz = encrypt_batch(cc=ev.cc, public_key=ev.public_key, layout=layout, values=dz)
    t0 = time.perf_counter()
    w = head.load_weights(state_dict=tm.state_dict())
    t1 = time.perf_counter()
    fwd = head.forward(cc=ev.cc, weights=w, inputs=enc_a)
    t2 = time.perf_counter()
    bwd = head.backward(cc=ev.cc, weights=w, forward=fwd, delta_logits=enc_dz)
    t3 = time.perf_counter()
    # correctness of this very run (never logged: compared here, only the error is reported)
    from ppml_hybrid.he_stage.codec import decrypt_batch  # hazmat: the benchmark plays K

    with torch.no_grad():
        x4 = torch.as_tensor(a) @ tm.blocks[3]["linear"].weight.double().T + tm.blocks[3]["linear"].bias.double()
        act = tm.blocks[3]["act"]
        h4 = act.a.double() * x4 * x4 + act.b.double() * x4
        z = h4 @ tm.blocks[4]["linear"].weight.double().T + tm.blocks[4]["linear"].bias.double()
        dh4 = torch.as_tensor(dz) @ tm.blocks[4]["linear"].weight.double()
        da = (dh4 * (2 * act.a.double() * x4 + act.b.double())) @ tm.blocks[3]["linear"].weight.double()
    err = max(
        np.abs(decrypt_batch(cc=ctx.cc, secret_key=secret.secret_key, tensor=fwd.logits, batch=batch) - z.numpy()).max(),
        np.abs(decrypt_batch(cc=ctx.cc, secret_key=secret.secret_key, tensor=bwd.delta_input, batch=batch) - da.numpy()).max(),
    )
    return {
        "batch": batch, "groups": layout.groups, "block": layout.block, "rotation_keys": len(head.rotation_indices),
        "keygen_s": keygen_s, "encrypt_inputs_s": enc_s, "input_ciphertexts": len(enc_a.cts),
        "plan_s": t1 - t0, "forward_s": t2 - t1, "backward_s": t3 - t2, "he_s": t3 - t1,
        "per_sample_s": (t3 - t1) / batch, "max_abs_error": float(err),
    }


def head_shapes(model) -> dict:
    """The HE head's dense shapes at split 3 (inputs, hidden units, classes) from the model itself."""
    shapes = block_shapes(model, 32)
    return {"n_in": int(np.prod(shapes[2].out_shape)), "hidden": model.blocks[3].out, "classes": model.blocks[4].out}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--small-batch", type=int, default=16)
    ap.add_argument("--skip-samples-in-slots", action="store_true", help="skip the slow G=1 run")
    ap.add_argument("--tenseal-python", default="/tmp/ts/bin/python")
    ap.add_argument("--tenseal-samples", type=int, default=1)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--smoke", action="store_true", help="insecure ring, batch 8: every code path (the suite runs it)")
    ap.add_argument("--check", action="store_true", help=f"exit 1 beyond {MAX_VS_FLOOR}x the op-count floor")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)

    if args.smoke:  # every code path, smallest sizes: insecure test ring, no G=1, no TenSEAL
        args.batch, args.small_batch, args.skip_samples_in_slots, args.tenseal_python = 8, 4, True, ""
    model = from_mapping(ModelConfig, yaml.safe_load((ROOT / "conf/model/relu_cnn.yaml").read_text()), "model")
    he_name = "insecure_test" if args.smoke else "ckks_128"
    he = from_mapping(HEConfig, yaml.safe_load((ROOT / f"conf/he/{he_name}.yaml").read_text()), "he")
    params = derive_params(he=he, model=model, split_layer=3, parties=2)
    ctx = build_context(params=params)
    kp = ctx.cc.KeyGen()
    ctx.cc.EvalMultKeyGen(kp.secretKey)
    ctx.cc.EvalRotateKeyGen(kp.secretKey, [256])
    costs = measure_op_costs(ctx.cc, kp.publicKey)

    shapes = head_shapes(model)
    configs = [(args.batch, None)]
    if not args.skip_samples_in_slots:
        configs.append((args.batch, 1))
    configs.append((args.small_batch, None))
    results = []
    for batch, g in configs:
        r = run_head(model=model, params=params, ctx_cache=ctx, batch=batch, max_groups=g)
        counts = floor_counts(r["groups"], **shapes)
        r["floor_counts"] = {str(k): v for k, v in counts.items()}
        r["floor_s"] = floor_seconds(counts, costs)
        r["vs_floor"] = r["he_s"] / r["floor_s"]
        results.append(r)

    tenseal = tenseal_batched = None
    if args.tenseal_python and Path(args.tenseal_python).exists():
        def run_tenseal(*extra: str) -> Dict[str, Any]:
            out = subprocess.run([args.tenseal_python, str(ROOT / "benchmarks/he_tenseal_baseline.py"),
                                  "--n-in", str(shapes["n_in"]), "--hidden", str(shapes["hidden"]),
                                  "--classes", str(shapes["classes"]), *extra],
                                 capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            return json.loads(out.stdout.strip().splitlines()[-1])

        tenseal_batched = run_tenseal("--batch", str(args.batch))
        tenseal = run_tenseal("--samples", str(args.tenseal_samples))

    report = {"context": {"ring": ctx.info.ring_dim, "depth": params.multiplicative_depth,
                          "security": params.security_level},
              "op_costs_ms": {lvl: {k: v * 1e3 for k, v in c.items()} for lvl, c in costs.items()},
              "runs": results, "tenseal": tenseal, "tenseal_batched": tenseal_batched}
    lines = [f"ring {ctx.info.ring_dim}, depth {params.multiplicative_depth}, {params.security_level}, 1 thread",
             "op costs (ms) by level: " + "; ".join(
                 f"L{lvl}: " + ", ".join(f"{k} {v * 1e3:.2f}" for k, v in c.items()) for lvl, c in costs.items())]
    hdr = f"{'batch':>5} {'G':>4} {'fwd s':>7} {'bwd s':>7} {'ms/sample':>9} {'floor s':>7} {'x floor':>7} {'in cts':>6} {'enc s':>6} {'rotkeys':>7} {'err':>8}"
    lines.append(hdr)
    for r in results:
        lines.append(f"{r['batch']:>5} {r['groups']:>4} {r['forward_s']:>7.2f} {r['backward_s']:>7.2f} "
                     f"{r['per_sample_s'] * 1e3:>9.2f} {r['floor_s']:>7.2f} {r['vs_floor']:>7.2f} "
                     f"{r['input_ciphertexts']:>6} {r['encrypt_inputs_s']:>6.2f} {r['rotation_keys']:>7} {r['max_abs_error']:>8.1e}")
    if tenseal_batched:
        ours = results[0]
        ours["tenseal_batched_over_ours"] = tenseal_batched["per_sample_s"] / ours["per_sample_s"]
        lines.append(f"TenSEAL {tenseal_batched['tenseal']} batched ({tenseal_batched['mode']}), batch "
                     f"{tenseal_batched['batch']}, ring {tenseal_batched['ring']}: {tenseal_batched['batch_s']:.1f} s, "
                     f"{tenseal_batched['per_sample_s'] * 1e3:.1f} ms/sample")
        lines.append(f"ratio TenSEAL batched / ours per sample at batch {ours['batch']}: "
                     f"{ours['tenseal_batched_over_ours']:.1f}x (the like-for-like baseline)")
    if tenseal:
        for r in results:
            r["tenseal_over_ours"] = tenseal["per_sample_s"] / r["per_sample_s"]
        lines.append(f"TenSEAL {tenseal['tenseal']} mm, one sample at a time, ring {tenseal['ring']}: "
                     f"fwd {tenseal['forward_s']:.2f} s + bwd {tenseal['backward_s']:.2f} s = {tenseal['per_sample_s']:.2f} s/sample")
        lines.append("TenSEAL one sample at a time / ours per sample (straw man, continuity): " + ", ".join(
            f"batch {r['batch']} G={r['groups']}: {r['tenseal_over_ours']:.0f}x" for r in results))
    lines.append(f"ratio head / op-count floor at batch {results[0]['batch']}: {results[0]['vs_floor']:.2f} "
                 f"(target at most {MAX_VS_FLOOR})")
    if not tenseal:
        lines.append("TenSEAL baseline skipped (no --tenseal-python interpreter: TenSEAL is not in the lock)")
    for ln in lines:
        print(ln)
    print("\n" + table_markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 1 if args.check and results[0]["vs_floor"] > MAX_VS_FLOOR else 0


def table_markdown(report: Dict[str, Any]) -> str:
    """The README's table and ratio lines from this script's JSON (``run_all.py`` renders with it)."""
    ctx = report["context"]
    lines = [f"ring {ctx['ring']}, depth {ctx['depth']}, {ctx['security']}, one thread", "",
             "| batch | G (features/ct) | fwd s | bwd s | ms/sample | op-count floor s | x floor | input cts |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        lines.append(f"| {r['batch']} | {r['groups']} | {r['forward_s']:.2f} | {r['backward_s']:.2f} | "
                     f"{r['per_sample_s'] * 1e3:.1f} | {r['floor_s']:.2f} | {r['vs_floor']:.2f} | {r['input_ciphertexts']} |")
    ours, batched, single = report["runs"][0], report.get("tenseal_batched"), report.get("tenseal")
    lines.append("")
    if batched:
        lines.append(f"- TenSEAL {batched['tenseal']} batched ({batched['mode']}), batch {batched['batch']}: "
                     f"{batched['per_sample_s'] * 1e3:.0f} ms per sample, **"
                     f"{batched['per_sample_s'] / ours['per_sample_s']:.1f}x ours** (the like-for-like baseline)")
    if single:
        lines.append(f"- TenSEAL one sample at a time (straw man, continuity): {single['per_sample_s']:.1f} s per sample, "
                     f"{single['per_sample_s'] / ours['per_sample_s']:.0f}x ours")
    if not (batched or single):
        lines.append("- TenSEAL baselines not run (no `--tenseal-python`)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
