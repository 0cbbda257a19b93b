"""``python -m ppml_hybrid COMMAND``: the per-host commands of a multi-site deployment.

* ``keygen --role ROLE --out DIR``: make this role's own TLS key pair on this host
  (:mod:`ppml_hybrid.identity`); prints the certificate's fingerprint for the consortium file.
* ``predict --model model.pt SCAN...``: apply a run's model to new scans on this host
  (:mod:`ppml_hybrid.training.predict`).
* ``party``, ``dealer``, ``keyservice``, ``evaluator``, ``coordinator``: run that role
  (:mod:`ppml_hybrid.roles`). Each takes ``--consortium FILE`` (the same at every host),
  ``--identity PREFIX`` (this host's ``PREFIX.key``/``PREFIX.crt`` from keygen) and the run
  config as Hydra overrides after the options (``split_layer=3 data.root=/data/site``), the
  same at every host except ``data.root``/``data.labels``.

Exit codes: 0 success; the project error's code otherwise (2 config, 3 data, 5 attestation,
6 MPC or a party failure, ...). Also installed as ``ppml-hybrid`` and ``ppml-hybrid-ROLE``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any, List, Optional, Tuple

from ppml_hybrid.errors import ConfigError, PPMLError


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


def _role_inputs(args: argparse.Namespace) -> Tuple[Any, Any, Any]:
    from ppml_hybrid.consortium import load_consortium
    from ppml_hybrid.identity import load_identity
    from ppml_hybrid.roles.runconfig import compose_run_config, load_run_config

    out = getattr(args, "output_dir", None)
    if args.run_config is not None:
        cfg = load_run_config(args.run_config, args.overrides, output_dir=out)
    else:
        cfg = compose_run_config(args.overrides, output_dir=out)
    return cfg, load_consortium(args.consortium), load_identity(args.identity)


def _party(args: argparse.Namespace) -> int:
    from ppml_hybrid.roles.party import run_party_role

    cfg, consortium, identity = _role_inputs(args)
    return run_party_role(cfg=cfg, consortium=consortium, identity=identity, role=args.role,
                          development_root=args.accept_development_attestation, bind_host=args.bind,
                          ledger_path=args.ledger)


def _dealer(args: argparse.Namespace) -> int:
    from ppml_hybrid.roles.dealer import run_dealer_role

    cfg, consortium, identity = _role_inputs(args)
    return run_dealer_role(cfg=cfg, consortium=consortium, identity=identity, bind_host=args.bind)


def _keyservice(args: argparse.Namespace) -> int:
    from ppml_hybrid.roles.services import run_keyservice_role

    cfg, consortium, identity = _role_inputs(args)
    return run_keyservice_role(cfg=cfg, consortium=consortium, identity=identity, bind_host=args.bind,
                               development_root_out=args.development_root_out)


def _keyservice_spec(args: argparse.Namespace) -> int:
    import json

    from ppml_hybrid.consortium import load_consortium
    from ppml_hybrid.roles.runconfig import compose_run_config, load_run_config
    from ppml_hybrid.roles.services import keyservice_spec

    cfg = (load_run_config(args.run_config, args.overrides) if args.run_config is not None
           else compose_run_config(args.overrides))
    spec = keyservice_spec(cfg, load_consortium(args.consortium), address=cfg.keyservice.address)
    args.out.write_text(json.dumps(spec.to_json(), indent=2) + "\n")
    print(f"wrote {args.out}: K's launch spec for {len(spec.registry.roles)} registered roles "
          f"(registry sha384 {spec.registry.digest().hex()[:16]}...); hand it to enclave/run.sh")
    return 0


def _sealed_store(args: argparse.Namespace) -> int:
    """The parent's sealed-key store (keyservice/sealing/store.py) until SIGTERM or Ctrl-C."""
    import socket

    from ppml_hybrid.keyservice.sealing.store import SealedStoreServer
    from ppml_hybrid.rpc.vsock_relay import vsock_listener

    if args.listen.startswith("vsock:"):
        listener = vsock_listener(port=int(args.listen.split(":", 1)[1]))
    elif args.listen.startswith("unix:"):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(args.listen[len("unix:"):])
        listener.listen(4)
    else:
        raise ConfigError(f"--listen {args.listen!r}: use vsock:PORT (the parent, for the enclave) or unix:PATH")
    args.file.parent.mkdir(parents=True, exist_ok=True)
    server = SealedStoreServer(listener=listener, path=args.file).start()
    logging.getLogger("ppml_hybrid").info("sealed-key store on %s for %s (%s)", args.listen, args.file,
                                          "a sealed key is there" if args.file.exists() else "empty")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _evaluator(args: argparse.Namespace) -> int:
    from ppml_hybrid.roles.services import run_evaluator_role

    cfg, consortium, identity = _role_inputs(args)
    return run_evaluator_role(cfg=cfg, consortium=consortium, identity=identity, bind_host=args.bind,
                              development_root=args.accept_development_attestation)


def _coordinator(args: argparse.Namespace) -> int:
    from ppml_hybrid.training.results import write_results
    from ppml_hybrid.roles.coordinator import run_coordinator

    cfg, consortium, identity = _role_inputs(args)
    # SIGTERM as Ctrl-C: the parties are told to stop and the checkpoint is written (train.resume)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    result = run_coordinator(cfg=cfg, consortium=consortium, identity=identity, bind_host=args.bind)
    write_results(cfg, result)
    return 0


def _predict(args: argparse.Namespace) -> int:
    import csv

    from ppml_hybrid.training.predict import as_rows, load_saved_model, predict_scans

    rows = as_rows(predict_scans(load_saved_model(args.model), args.scans, slice_axis=args.slice_axis,
                                 saliency_dir=args.saliency))
    width = max(len("scan"), *(len(r["scan"]) for r in rows))
    classes = [k for k in rows[0] if k.startswith("p") and k[1:].isdigit()]
    print(f"{'scan':<{width}}  slices  predicted  " + "  ".join(f"{'P(' + k[1:] + ')':>8}" for k in classes))
    for r in rows:
        print(f"{r['scan']:<{width}}  {r['slices']:>6}  {r['predicted']:>9}  "
              + "  ".join(f"{r[k]:>8.4f}" for k in classes))
    if args.csv is not None:
        with open(args.csv, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {args.csv}")
    if args.saliency is not None:
        print(f"class-activation overlays (one PNG per slice) in {args.saliency}")
    return 0


def _role_parser(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text)
    p.add_argument("--consortium", type=Path, required=True, help="the consortium file (the same at every host)")
    p.add_argument("--identity", type=Path, required=True, help="this role's key pair prefix (PREFIX.key, PREFIX.crt)")
    p.add_argument("--bind", default=None, help="listen on this address instead of the role's consortium host")
    p.add_argument("--run-config", type=Path, default=None,
                   help="a complete run config YAML (then the overrides are key=value on top of it)")
    p.add_argument("overrides", nargs="*", help="run config overrides, as for train.py (split_layer=3 ...)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ppml_hybrid", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    kg = sub.add_parser("keygen", help="make this role's TLS key pair (private key stays here)")
    kg.add_argument("--role", required=True, help="party-0 .. party-{n-1}, dealer, evaluator, keyservice, coordinator")
    kg.add_argument("--out", type=Path, required=True, help="folder for ROLE.key (0600) and ROLE.crt")
    kg.add_argument("--valid-days", type=int, default=365)
    dev_help = ("accept the key service's DEVELOPMENT attestation (no enclave) with this root certificate "
                "(written by the key service's --development-root-out): this host's own choice, never for real data")
    party = _role_parser(sub, "party", "one hospital: trains on this site's own scans")
    party.add_argument("--role", required=True, help="party-0 .. party-{n-1}")
    party.add_argument("--accept-development-attestation", type=Path, default=None, metavar="ROOT_PEM", help=dev_help)
    party.add_argument("--ledger", type=Path, default=None, metavar="FILE",
                       help="this site's privacy ledger (default ~/.ppml_hybrid/ledgers/ROLE-RUNDIGEST.jsonl): every "
                            "release is entered there before it is opened; dp.max_epsilon is enforced from it")
    _role_parser(sub, "dealer", "serves the parties' correlated randomness")
    ks = _role_parser(sub, "keyservice", "K: holds the CKKS secret key (in an enclave in production)")
    ks.add_argument("--development-root-out", type=Path, default=None,
                    help="write the development signer's root certificate here (development attestation only)")
    sp = sub.add_parser("keyservice-spec", help="write K's launch spec (enclave/run.sh SPEC.json) from the "
                                                "consortium file's published certificates; makes no key")
    sp.add_argument("--consortium", type=Path, required=True, help="the consortium file")
    sp.add_argument("--run-config", type=Path, default=None, help="a complete run config YAML")
    sp.add_argument("--out", type=Path, required=True, help="where the spec goes (JSON, public)")
    sp.add_argument("overrides", nargs="*", help="run config overrides (e.g. keyservice=enclave split_layer=3)")
    ss = sub.add_parser("sealed-store", help="on K's parent instance: keep K's KMS-sealed key (ciphertext) and hand it "
                                             "to the enclave at start, so a restart unseals instead of making new keys")
    ss.add_argument("--listen", required=True, help="vsock:PORT (the enclave dials the parent, CID 3) or unix:PATH")
    ss.add_argument("--file", type=Path, required=True, help="where the sealed key is kept (0600)")
    ev = _role_parser(sub, "evaluator", "E: evaluates the HE blocks on ciphertexts")
    ev.add_argument("--accept-development-attestation", type=Path, default=None, metavar="ROOT_PEM", help=dev_help)
    co = _role_parser(sub, "coordinator", "schedules steps, applies the public update, writes the metrics")
    co.add_argument("--output-dir", default=None, help="where metrics.json and model.pt go")
    pr = sub.add_parser("predict", help="apply a run's model.pt to new scans (NIfTI, DICOM file or series folder)")
    pr.add_argument("--model", type=Path, required=True, help="model.pt from a run's output folder")
    pr.add_argument("scans", type=Path, nargs="+", help="scans to score (each: mean probability over its slices)")
    pr.add_argument("--csv", type=Path, default=None, help="also write the predictions to this CSV file")
    pr.add_argument("--slice-axis", type=int, default=None, choices=(0, 1, 2),
                    help="slice along this axis instead of the training run's data.slice_axis")
    pr.add_argument("--saliency", type=Path, default=None, metavar="DIR",
                    help="write one PNG per slice with a class-activation (Grad-CAM) overlay into DIR")
    return parser


COMMANDS = {"keygen": _keygen, "party": _party, "dealer": _dealer, "keyservice": _keyservice,
            "keyservice-spec": _keyservice_spec, "sealed-store": _sealed_store,
            "evaluator": _evaluator, "coordinator": _coordinator, "predict": _predict}


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in ("keygen", "predict"):
        logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.command} %(levelname)s %(message)s")
        logging.getLogger("ppml_hybrid").setLevel(logging.INFO)
    try:
        return COMMANDS[args.command](args)
    except PPMLError as exc:
        if args.command in ("keygen", "predict"):
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        else:  # a role's log line (its log file on the one-machine run) names the role and the error
            logging.getLogger("ppml_hybrid").error("%s %s: %s: %s", args.command, getattr(args, "role", ""),
                                                   type(exc).__name__, exc)
        return exc.exit_code


def _script(command: str) -> Any:
    return lambda: sys.exit(main([command, *sys.argv[1:]]))


party_script, dealer_script, keyservice_script = _script("party"), _script("dealer"), _script("keyservice")
evaluator_script, coordinator_script = _script("evaluator"), _script("coordinator")

