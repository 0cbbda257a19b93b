"""``python -m ppml_hybrid COMMAND``: the per-host commands of a multi-site deployment.

* ``keygen --role ROLE --out DIR``: make this role's own TLS key pair on this host
  (:mod:`ppml_hybrid.identity`); prints the certificate's fingerprint for the consortium file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from ppml_hybrid.errors import PPMLError


def _keygen(args: argparse.Namespace) -> int:
    from ppml_hybrid.consortium import ROLE_NAMES_HINT, is_role_name
    from ppml_hybrid.identity import make_link_identity, write_identity

    if not is_role_name(args.role):
        raise PPMLError(f"--role {args.role!r}: use {ROLE_NAMES_HINT}")
    identity = make_link_identity(f"ppml-hybrid {args.role}", valid_days=args.valid_days)
    cert = write_identity(identity, out_dir=args.out, role=args.role)
    print(f"wrote {args.out / (args.role + '.key')} (private: keep on this host) and {cert} (publish it)")
    print(f"fingerprint {identity.fingerprint}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppml_hybrid", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    kg = sub.add_parser("keygen", help="make this role's TLS key pair (private key stays here)")
    kg.add_argument("--role", required=True, help="party-0 .. party-{n-1}, dealer, evaluator, keyservice, coordinator")
    kg.add_argument("--out", type=Path, required=True, help="folder for ROLE.key (0600) and ROLE.crt")
    kg.add_argument("--valid-days", type=int, default=365)
    args = parser.parse_args(argv)
    try:
        return {"keygen": _keygen}[args.command](args)
    except PPMLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
