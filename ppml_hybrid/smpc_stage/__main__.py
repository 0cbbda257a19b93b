"""One MPC role on this host: ``python -m ppml_hybrid.smpc_stage check --rank R ...``.

For deployments where each hospital runs its own party (and someone runs the dealer): every
role starts this command with the same ``--parties``, ``--master-addr`` and ``--master-port``
and its own ``--rank`` (0..parties-1 for parties, ``parties`` for the dealer). The ``check``
program verifies the rendezvous, the dealer and the links end to end without revealing
anything private:

1. each party draws r_j uniformly (its own CSPRNG) and shares it;
2. MPC computes s = sum_j r_j and s*s (one Beaver product from the dealer);
3. the parties open s and s*s and check (s)^2 == s*s within fixed-point tolerance;
4. each party prints its traffic (bytes, rounds) and the measured time.

Who learns what: every party learns s, a sum of fresh random numbers (nothing about any
hospital's data); the dealer learns nothing. Exit code 0 when the check passes, 6 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
import time

import torch

from ppml_hybrid.smpc_stage.errors import MPCError
from ppml_hybrid.smpc_stage.party import run_dealer, run_party
from ppml_hybrid.smpc_stage.rendezvous import Rendezvous

log = logging.getLogger("ppml_hybrid.smpc_stage")


def rendezvous_check(ctx, n_values: int) -> dict:
    """Party program of ``check`` (module doc, steps 1-3); returns what this party saw."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    mine = torch.tensor([secrets.randbelow(2**16) / 2**12 - 8.0 for _ in range(n_values)])
    total = None
    for src in range(ctx.parties):
        shared = ctx.share(mine if src == ctx.rank else None, src=src)
        total = shared if total is None else total + shared
    opened_sum = total.get_plain_text()
    opened_square = (total * total).get_plain_text()
    ok = bool(torch.allclose(opened_square, opened_sum * opened_sum, atol=1e-2, rtol=1e-3))
    traffic = ctx.transport.snapshot()
    return {"ok": ok, "seconds": time.perf_counter() - start, "bytes": traffic.bytes_total,
            "rounds": traffic.rounds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppml_hybrid.smpc_stage", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["check"])
    parser.add_argument("--rank", type=int, required=True, help="0..parties-1 for a party, parties for the dealer")
    parser.add_argument("--parties", type=int, default=2)
    parser.add_argument("--master-addr", default="127.0.0.1")
    parser.add_argument("--master-port", type=int, default=29500)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    parser.add_argument("--values", type=int, default=1024)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(1)
    try:
        rz = Rendezvous(master_addr=args.master_addr, master_port=args.master_port, parties=args.parties,
                        rank=args.rank, timeout_s=args.timeout_s)
        if rz.is_dealer:
            run_dealer(rendezvous=rz)
            log.info("dealer finished")
            return 0
        result = run_party(rendezvous=rz, program=rendezvous_check, inputs=args.values)
    except MPCError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return exc.exit_code
    except (RuntimeError, OSError) as exc:  # torch.distributed reports unreachable peers this way
        log.error("%s could not complete the check: %s", f"rank {args.rank}", exc)
        return 6
    log.info("%s: check %s in %.2f s, %d bytes, %d rounds", rz.role, "passed" if result["ok"] else "FAILED",
             result["seconds"], result["bytes"], result["rounds"])
    return 0 if result["ok"] else 6


if __name__ == "__main__":
    sys.exit(main())
