"""TenSEAL baselines for benchmarks/he_head.py: the same HE head, one sample at a time and batched.

Run with a Python that has tenseal (kept out of the project's environment):
    ~/.pyenv/versions/3.10.13/bin/python -m venv /tmp/ts && /tmp/ts/bin/pip install tenseal==0.3.16 numpy
    /tmp/ts/bin/python benchmarks/he_tenseal_baseline.py --samples 2        # one sample at a time
    /tmp/ts/bin/python benchmarks/he_tenseal_baseline.py --batch 256        # a batch in the slots
Prints one JSON line: seconds per sample for forward and backward (encryption excluded).

``--batch B``: what a competent TenSEAL user writes for a batch. The B samples go into the
slots, one CKKSVector per input feature (B <= 8192 slots), so every dense layer is
ciphertext-scalar products and additions with no rotation: n_in x hidden of them forward and
as many backward; per-sample time is the batch's over B. TenSEAL's own batched tensor
(``ts.ckks_tensor(ctx, X, batch=True).dot(W)``) computes the same thing but holds every
ciphertext-scalar product at once: at 256 features x 32 it grew past 19 GB and was killed on
this 24 GB machine at batch 8, so the per-feature vectors are the baseline here.

Per sample (default), with CKKSVector.mm (vector x plaintext matrix, rotations inside):
forward  x4 = a.mm(W4^T) + c4; h4 = a4*x4^2 + b4*x4 (polyval); z = h4.mm(W5^T) + c5
backward dh4 = dz.mm(W5); dx4 = dh4 * (2*a4*x4 + b4); da = dx4.mm(W4)
128-bit (SEAL's default check): N = 16384, moduli 60,40,40,40,40,60 (4 multiplicative levels,
what this sample-at-a-time chain needs), scale 2^40.
"""

import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import tenseal as ts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--n-in", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--batch", type=int, default=0, help="a batch of this many samples in the slots (0: one at a time)")
    args = ap.parse_args()
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=16384, coeff_mod_bit_sizes=[60, 40, 40, 40, 40, 60],
                     n_threads=1)
    ctx.global_scale = 2**40
    ctx.generate_galois_keys()
    rng = np.random.default_rng(0)
    w4 = rng.standard_normal((args.hidden, args.n_in)) / np.sqrt(args.n_in)
    c4 = rng.standard_normal(args.hidden) * 0.1
    w5 = rng.standard_normal((args.classes, args.hidden)) / np.sqrt(args.hidden)
    c5 = rng.standard_normal(args.classes) * 0.1
    a4, b4 = 0.05, 1.0
    if args.batch:
        print(json.dumps(_batched(ctx, rng, args, w4, c4, w5, c5, a4, b4)))
        return
    fwd_t, bwd_t, errs = [], [], []
    for _ in range(args.samples):
        a = rng.standard_normal(args.n_in) * 0.5
        dz = rng.standard_normal(args.classes) * 0.5
        ea, edz = ts.ckks_vector(ctx, a.tolist()), ts.ckks_vector(ctx, dz.tolist())
        t0 = time.perf_counter()
        x4 = ea.mm(w4.T.tolist()) + c4.tolist()
        h4 = x4.polyval([0.0, b4, a4])
        z = h4.mm(w5.T.tolist()) + c5.tolist()
        t1 = time.perf_counter()
        dh4 = edz.mm(w5.tolist())
        dx4 = dh4 * (x4 * (2 * a4) + b4)
        da = dx4.mm(w4.tolist())
        t2 = time.perf_counter()
        fwd_t.append(t1 - t0)
        bwd_t.append(t2 - t1)
        xp = w4 @ a + c4
        da_ref = w4.T @ ((w5.T @ dz) * (2 * a4 * xp + b4))
        z_ref = w5 @ (a4 * xp * xp + b4 * xp) + c5
        errs.append(max(np.abs(np.array(z.decrypt()) - z_ref).max(), np.abs(np.array(da.decrypt()) - da_ref).max()))
    print(json.dumps({"forward_s": float(np.mean(fwd_t)), "backward_s": float(np.mean(bwd_t)),
                      "per_sample_s": float(np.mean(fwd_t) + np.mean(bwd_t)), "max_abs_error": float(max(errs)),
                      "ring": 16384, "samples": args.samples, "tenseal": ts.__version__}))


def _dense(cts, w, bias=None):
    """out_j = sum_i w[j, i] ct_i (+ bias_j): ciphertext-scalar products, the batch in the slots."""
    out = []
    for j in range(w.shape[0]):
        acc = cts[0] * float(w[j, 0])
        for i in range(1, len(cts)):
            acc += cts[i] * float(w[j, i])
        out.append(acc + float(bias[j]) if bias is not None else acc)
    return out


def _batched(ctx, rng, args, w4, c4, w5, c5, a4, b4) -> dict:
    """One batch, samples in the slots and one CKKSVector per feature (module docstring)."""
    a = rng.standard_normal((args.batch, args.n_in)) * 0.5
    dz = rng.standard_normal((args.batch, args.classes)) * 0.5
    ea = [ts.ckks_vector(ctx, a[:, i].tolist()) for i in range(args.n_in)]
    edz = [ts.ckks_vector(ctx, dz[:, k].tolist()) for k in range(args.classes)]
    t0 = time.perf_counter()
    x4 = _dense(ea, w4, c4)
    h4 = [x.polyval([0.0, b4, a4]) for x in x4]
    z = _dense(h4, w5, c5)
    t1 = time.perf_counter()
    dh4 = _dense(edz, w5.T)
    dx4 = [d * (x * (2 * a4) + b4) for d, x in zip(dh4, x4)]
    da = _dense(dx4, w4.T)
    t2 = time.perf_counter()
    xp = a @ w4.T + c4
    z_ref = (a4 * xp * xp + b4 * xp) @ w5.T + c5
    da_ref = ((dz @ w5) * (2 * a4 * xp + b4)) @ w4
    z_got = np.array([v.decrypt()[:args.batch] for v in z]).T
    da_got = np.array([v.decrypt()[:args.batch] for v in da]).T
    err = max(np.abs(z_got - z_ref).max(), np.abs(da_got - da_ref).max())
    return {"forward_s": (t1 - t0) / args.batch, "backward_s": (t2 - t1) / args.batch,
            "per_sample_s": (t2 - t0) / args.batch, "batch_s": t2 - t0, "max_abs_error": float(err),
            "ring": 16384, "batch": args.batch, "mode": "one CKKSVector per feature, the batch in the slots",
            "tenseal": ts.__version__}


if __name__ == "__main__":
    main()
