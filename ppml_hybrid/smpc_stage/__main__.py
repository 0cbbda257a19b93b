"""One MPC role on this host: ``python -m ppml_hybrid.smpc_stage check --role ROLE ...``.

For deployments where each hospital runs its own party (and someone runs the dealer): every
role starts this command with the same consortium file (addresses and pinned certificates)
and its own ``--role`` (``party-0`` .. ``party-{n-1}``, or ``dealer``) and ``--identity``
(the key pair it made with ``python -m ppml_hybrid keygen``). The ``check`` program verifies
the authenticated links, the dealer and the MPC end to end without revealing anything private:

1. each party draws r_j uniformly (its own CSPRNG) and shares it;
2. MPC computes s = sum_j r_j and s*s (one Beaver product from the dealer);
3. the parties open s and s*s and check (s)^2 == s*s within fixed-point tolerance;
4. each party prints its traffic (bytes, rounds) and the measured time.

Who learns what: every party learns s, a sum of fresh random numbers (nothing about any
hospital's data); the dealer learns nothing. Exit code 0 when the check passes, the error's
exit code otherwise (2: config, e.g. a consortium file or identity problem; 6: MPC).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import secrets
import sys
import time
from pathlib import Path

import torch

from ppml_hybrid.consortium import load_consortium, mpc_roles
from ppml_hybrid.errors import PPMLError
from ppml_hybrid.identity import load_identity
from ppml_hybrid.smpc_stage.links import Roster
from ppml_hybrid.smpc_stage.party import LinkSetup, run_dealer, run_party
from ppml_hybrid.smpc_stage.rendezvous import Rendezvous

log = logging.getLogger("ppml_hybrid.smpc_stage")


def rendezvous_check(ctx, inputs) -> dict:
    """Party program of ``check`` (module doc, steps 1-3), ``repeat`` times; returns what this
    party saw. ``inputs``: the number of values, or (values, repeat)."""
    torch.set_num_threads(1)
    n_values, repeat = inputs if isinstance(inputs, tuple) else (inputs, 1)
    start = time.perf_counter()
    ok = True
    for i in range(repeat):
        if i == 1:  # the links carried a whole check: what a soak's watcher waits for
            log.info("party-%d: first check done, links up", ctx.rank)
        mine = torch.tensor([secrets.randbelow(2**16) / 2**12 - 8.0 for _ in range(n_values)])
        total = None
        for src in range(ctx.parties):
            shared = ctx.share(mine if src == ctx.rank else None, src=src)
            total = shared if total is None else total + shared
        opened_sum = total.get_plain_text()
        opened_square = (total * total).get_plain_text()
        ok &= bool(torch.allclose(opened_square, opened_sum * opened_sum, atol=1e-2, rtol=1e-3))
    traffic = ctx.transport.snapshot()
    return {"ok": ok, "seconds": time.perf_counter() - start, "bytes": traffic.bytes_total,
            "rounds": traffic.rounds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppml_hybrid.smpc_stage", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["check"])
    parser.add_argument("--role", required=True, help="party-0 .. party-{n-1}, or dealer")
    parser.add_argument("--identity", type=Path, required=True,
                        help="this role's key pair prefix (PREFIX.key, PREFIX.crt from keygen)")
    parser.add_argument("--consortium", type=Path, required=True, help="the consortium file (same at every host)")
    parser.add_argument("--bind", default=None, help="listen on this address instead of the role's host")
    parser.add_argument("--timeout-s", type=float, default=120.0)
    parser.add_argument("--values", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=1, help="run the check this many times (a longer soak)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(1)
    try:
        consortium = load_consortium(args.consortium)
        names = [e.name for e in mpc_roles(consortium)]
        if args.role not in names:
            raise PPMLError(f"--role {args.role!r} is not an MPC role of {args.consortium} ({', '.join(names)})")
        rank = names.index(args.role)
        digest = hashlib.sha256(f"{consortium.digest()}|check|values={args.values}".encode()).hexdigest()
        links = LinkSetup(identity=load_identity(args.identity), roster=Roster.from_consortium(consortium, run_digest=digest),
                          bind_host=args.bind)
        rz = Rendezvous(master_addr="127.0.0.1", master_port=1, parties=consortium.parties, rank=rank,
                        timeout_s=args.timeout_s)
        if rz.is_dealer:
            run_dealer(rendezvous=rz, links=links)
            log.info("dealer finished")
            return 0
        result = run_party(rendezvous=rz, program=rendezvous_check, inputs=(args.values, args.repeat), links=links)
    except PPMLError as exc:
        log.error("%s (%s): %s: %s", args.role, args.consortium, type(exc).__name__, exc)
        return exc.exit_code
    log.info("%s: check %s in %.2f s, %d bytes, %d rounds", args.role, "passed" if result["ok"] else "FAILED",
             result["seconds"], result["bytes"], result["rounds"])
    return 0 if result["ok"] else 6


if __name__ == "__main__":
    sys.exit(main())
