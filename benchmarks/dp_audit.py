"""Empirical DP audit of the enclave noise source (dp.noise_source=enclave): the noise path, and a
one-run canary audit of the DP step.

    .venv/bin/python benchmarks/dp_audit.py [--draws 100000] [--canaries 1000] [--check]
    .venv/bin/python benchmarks/dp_audit.py --smoke   # the test suite runs this

(a) Noise path: a real key service (in this process, gRPC + mTLS, insecure test ring: its keys
    are not used here) and two real party processes; every draw goes K -> shares -> each party
    adds its share -> the DP step's opening (``protocols/programs.py: OpenEnclaveNoise``). At
    sigma C 2^32 = 1, 2.5 and 4 lattice units the opened values are tested against the discrete
    Gaussian (chi-square; a rounded float Gaussian fails at 1 and 1.5 units, see
    tests/keyservice/test_noise.py); at sigma = 1.2, C = 1 the standard deviation must be within
    1% of sigma C.
(b) Canary audit (privacy/audit.py): one step of the fixed-point twin with K's own sampler,
    m Dirac canaries; the epsilon lower bound must stay below the accounted epsilon of that
    step (RDP at integer orders, sample rate 1), and the positive control (noise cut to a
    quarter, still accounted at full sigma) must exceed it.

``--check`` exits 1 when any of these fails. Results: benchmarks/results/dp_audit.{txt,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np

from bench_config import ROOT, run_config

from ppml_hybrid.keyservice.noise import discrete_gaussian
from ppml_hybrid.privacy.accounting import DISCRETE_GAUSSIAN_ORDERS
from ppml_hybrid.privacy.audit import canary_audit, discrete_gaussian_fit

FIT_P = 1e-4  # a correct sampler fails the fit this rarely (per test)
LATTICE = 2.0 ** 32  # the noise-only sums' scale


def noise_path(*, draws: int, sigma: float) -> dict:
    from ppml_hybrid.protocols.programs import OpenEnclaveNoise
    from ppml_hybrid.roles.local_services import party_name, start_local_he_services
    from ppml_hybrid.smpc_stage.launcher import run_parties
    from ppml_hybrid.training.plan import key_service_run_spec

    cfg = run_config(["he=insecure_test", "split_layer=5"])
    out = {}
    with start_local_he_services(run=key_service_run_spec(cfg), keyservice=cfg.keyservice,
                                 with_evaluator=False) as svc:
        creds = tuple(svc.credential(party_name(j)) for j in (1, 2))
        settings = [("units", u, 1.0, u / LATTICE) for u in (1.0, 2.5, 4.0)] + [("std", sigma, sigma, 1.0)]
        for step, (kind, target, noise_multiplier, clip) in enumerate(settings):
            program = OpenEnclaveNoise(key_address=svc.key_service.address, key_trust_pem=svc.key_service.trust_pem,
                                       credentials=creds, noise_multiplier=noise_multiplier, max_grad_norm=clip,
                                       count=draws, first_step=step)
            start = time.perf_counter()
            run = run_parties(smpc=cfg.smpc, program=program, party_inputs=[None, None])
            opened = run.results[0][0]
            if not np.array_equal(opened, run.results[1][0]):
                raise SystemExit("the parties opened different noise")
            seconds = time.perf_counter() - start
            if kind == "units":
                p = discrete_gaussian_fit(opened, target)
                out[f"fit_sigma_{target:g}_units"] = {"p": p, "ok": p > FIT_P, "draws": int(opened.size),
                                                      "seconds": seconds}
            else:
                ratio = float(opened.astype(np.float64).std() / LATTICE / (sigma * clip))
                out["std_ratio"] = {"sigma": sigma, "ratio": ratio, "ok": abs(ratio - 1) < 0.01,
                                    "draws": int(opened.size), "seconds": seconds}
    return out


def accounted_epsilon(sigma: float, delta: float) -> float:
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.step(noise_multiplier=sigma, sample_rate=1.0)
    return float(acc.get_epsilon(delta=delta, alphas=list(DISCRETE_GAUSSIAN_ORDERS)))


def audit(*, sigma: float, delta: float, canaries: int, dimensions: int, repeats: int) -> dict:
    rng = np.random.default_rng()  # canary choice only: the noise is K's sampler (OpenSSL CSPRNG)

    def sampler(n, scale):
        return discrete_gaussian(n, scale=scale)

    eps = accounted_epsilon(sigma, delta)
    runs = {name: [canary_audit(noise_std=s, sampler=sampler, canaries=canaries, dimensions=dimensions,
                                delta=delta, rng=rng) for _ in range(repeats)]
            for name, s in (("mechanism", sigma), ("quarter_noise_control", sigma / 4))}
    lbs = {name: [r.epsilon_lower_bound for r in rs] for name, rs in runs.items()}
    return {"sigma": sigma, "delta": delta, "canaries": canaries, "dimensions": dimensions,
            "accounted_epsilon": eps, "lower_bounds": lbs,
            "mechanism_ok": max(lbs["mechanism"]) < eps,
            "control_flagged": min(lbs["quarter_noise_control"]) > eps}


def table_markdown(report: Dict[str, Any]) -> str:
    """The README's table from this script's JSON (``run_all.py`` renders with it)."""
    path, aud = report["noise_path"], report["audit"]
    fits = sorted((k for k in path if k.startswith("fit_sigma_")), key=lambda k: float(k.split("_")[2]))
    units = " / ".join(k.split("_")[2] for k in fits)
    draws = path[fits[0]]["draws"] if fits else 0
    lb, eps, n = aud["lower_bounds"], aud["accounted_epsilon"], len(aud["lower_bounds"]["mechanism"])
    std = path["std_ratio"]
    return "\n".join([
        "| check | measured | target |", "|---|---|---|",
        f"| fit to N_Z(0, s^2), s = {units} lattice units, {draws:,} draws each | p = "
        + " / ".join(f"{path[k]['p']:.2g}" for k in fits) + f" | p > {FIT_P:g} (a rounded float Gaussian fails at s <= 1.5) |",
        f"| std / (sigma C), sigma {std['sigma']}, C 1, {std['draws']:,} draws | {std['ratio']:.4f} | within 1% |",
        f"| epsilon lower bound, mechanism as built ({n} audits) | at most {max(lb['mechanism']):.2f} | "
        f"below the accounted {eps:.2f} for the audited step |",
        f"| epsilon lower bound, noise cut to a quarter ({n} audits) | at least {min(lb['quarter_noise_control']):.2f} | "
        f"above {eps:.2f}: the control is flagged |"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=100_000)
    parser.add_argument("--canaries", type=int, default=1000)
    parser.add_argument("--dimensions", type=int, default=12_000, help="the released sum's size (demo model: ~12k)")
    parser.add_argument("--repeats", type=int, default=10, help="audits per arm (each a fresh one-run audit)")
    parser.add_argument("--sigma", type=float, default=1.2)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="where the results go")
    parser.add_argument("--smoke", action="store_true", help="10^4 draws, 1 audit per arm (the suite runs it)")
    args = parser.parse_args()
    if args.smoke:
        args.draws, args.repeats = 10_000, 1
    path = noise_path(draws=args.draws, sigma=args.sigma)
    aud = audit(sigma=args.sigma, delta=args.delta, canaries=args.canaries, dimensions=args.dimensions,
                repeats=args.repeats)
    lines = [f"noise path (K -> shares -> parties -> opening), {args.draws} draws per setting:"]
    for name, r in path.items():
        if name == "std_ratio":
            lines.append(f"  sigma {r['sigma']}, C 1: ratio std / (sigma C) = {r['ratio']:.4f} (target within 1%) "
                         f"{'ok' if r['ok'] else 'MISSED'}")
        else:
            lines.append(f"  {name}: chi-square p = {r['p']:.3g} (> {FIT_P:g}) {'ok' if r['ok'] else 'MISSED'}")
    lb, eps = aud["lower_bounds"], aud["accounted_epsilon"]
    lines += [f"canary audit, one step, {aud['canaries']} canaries in {aud['dimensions']} dimensions, "
              f"{len(lb['mechanism'])} audits per arm, delta {aud['delta']:g}:",
              f"  accounted epsilon (sigma {aud['sigma']}, RDP integer orders): {eps:.3f}",
              f"  lower bound, mechanism as built:       max {max(lb['mechanism']):.3f}  "
              f"ratio lower bound / accounted: {max(lb['mechanism']) / eps:.2f} (must stay < 1) "
              f"{'ok' if aud['mechanism_ok'] else 'MISSED'}",
              f"  lower bound, noise cut to a quarter:   min {min(lb['quarter_noise_control']):.3f}  "
              f"ratio {min(lb['quarter_noise_control']) / eps:.2f} (must exceed 1: the control is flagged) "
              f"{'ok' if aud['control_flagged'] else 'MISSED'}"]
    print("\n".join(lines))
    report = {"noise_path": path, "audit": aud}
    print("\n" + table_markdown(report))
    if not args.smoke:
        results = args.out
        (results / "dp_audit.txt").write_text("\n".join(lines) + "\n")
        (results / "dp_audit.json").write_text(json.dumps(report, indent=2) + "\n")
    ok = all(r["ok"] for r in path.values()) and aud["mechanism_ok"] and aud["control_flagged"]
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
