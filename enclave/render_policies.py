"""Render the KMS key policy and the parent's IAM policy for one enclave build.

    python enclave/render_policies.py --pcrs enclave/out/pcrs.json --account ACCOUNT_ID --out enclave/out
        [--region REGION --key-id KEY_ID]

Writes ``kms-key-policy.rendered.json`` (needs the account and the build's PCRs) and, once the
key exists (``--region`` and ``--key-id``), ``iam-parent-policy.rendered.json``. The PCRs come
from ``build.sh``'s ``pcrs.json``; without PCR8 (an unsigned image) its condition and its Deny
statement are dropped, rather than left as a placeholder that no enclave would match. Refused:
a PCR that is not 96 hex digits or is all zeros (a debug enclave's), an account that is not 12
digits, and any placeholder left in the output. Standard library only (runs on the parent).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict

HERE = Path(__file__).resolve().parent
PLACEHOLDER = re.compile(r"PCR[0-9]+_SHA384_HEX|ACCOUNT_ID|\bREGION\b|\bKEY_ID\b")


def _pcrs(path: Path) -> Dict[str, str]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--pcrs {path}: not readable JSON ({exc}); run enclave/build.sh first")
    pcrs = {}
    for name in ("PCR0", "PCR1", "PCR2", "PCR8"):
        value = raw.get(name)
        if value is None:
            if name != "PCR8":
                raise SystemExit(f"--pcrs {path}: {name} missing")
            continue
        if not re.fullmatch(r"[0-9a-fA-F]{96}", str(value)) or set(str(value)) == {"0"}:
            raise SystemExit(f"--pcrs {path}: {name} must be 96 hex digits of a non-debug build; got {value!r}")
        pcrs[name] = str(value).lower()
    return pcrs


def _fill(node: Any, values: Dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _fill(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, values) for v in node]
    if isinstance(node, str):
        for key, value in values.items():
            node = re.sub(rf"\b{key}\b", value, node)
    return node


def _without_pcr8(policy: Dict[str, Any]) -> Dict[str, Any]:
    """Drop PCR8's condition and Deny statement (an unsigned image has no PCR8)."""
    out = []
    for st in policy["Statement"]:
        conditions = st.get("Condition", {})
        if any("kms:RecipientAttestation:PCR8" in c and len(c) == 1 for c in conditions.values()):
            continue  # DenyUnlessPCR8
        for c in conditions.values():
            c.pop("kms:RecipientAttestation:PCR8", None)
        out.append(st)
    return {**policy, "Statement": out}


def render(template: Path, values: Dict[str, str], *, signed: bool) -> Dict[str, Any]:
    policy = json.loads(template.read_text())
    if not signed:
        policy = _without_pcr8(policy)
    policy = _fill(policy, values)
    left = PLACEHOLDER.findall(json.dumps(policy))
    if left:
        raise SystemExit(f"{template.name}: placeholders left after rendering: {sorted(set(left))}")
    return policy


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcrs", type=Path, required=True)
    ap.add_argument("--account", required=True)
    ap.add_argument("--region", default=None)
    ap.add_argument("--key-id", default=None, help="the KMS key's id (after aws kms create-key)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if not re.fullmatch(r"[0-9]{12}", args.account):
        raise SystemExit(f"--account {args.account!r}: an AWS account id is 12 digits")
    pcrs = _pcrs(args.pcrs)
    values = {f"{k}_SHA384_HEX": v for k, v in pcrs.items()}
    values["ACCOUNT_ID"] = args.account
    signed = "PCR8" in pcrs
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    key_policy = args.out / "kms-key-policy.rendered.json"
    key_policy.write_text(json.dumps(render(HERE / "kms-key-policy.json", values, signed=signed), indent=2) + "\n")
    written.append(key_policy)
    if args.key_id or args.region:
        if not (args.key_id and args.region and re.fullmatch(r"[a-z]{2}(-[a-z]+)+-[0-9]", args.region)):
            raise SystemExit("--region and --key-id go together (a region such as eu-west-1, the key's id)")
        iam = args.out / "iam-parent-policy.rendered.json"
        iam.write_text(json.dumps(render(HERE / "iam-parent-policy.json",
                                         {**values, "REGION": args.region, "KEY_ID": args.key_id}, signed=signed),
                                  indent=2) + "\n")
        written.append(iam)
    print(f"wrote {', '.join(str(p) for p in written)} ({'PCR0/1/2/8' if signed else 'PCR0/1/2: unsigned image'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
