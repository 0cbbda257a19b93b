"""Step 3 of enclave/README.md, run as written against an ``aws`` stand-in.

The block is taken from the README itself (so the documented commands are the tested ones) and
run with bash on a fake build's ``pcrs.json``. The stand-in accepts only the calls and flags the
AWS CLI documents for them (``kms create-key``, ``kms create-alias``, ``iam put-role-policy``)
and checks what they carry: the rendered key policy (no placeholder, every use conditioned on
the build's PCRs, one Deny per PCR), the alias on the key just created, and the parent's policy
on that key's ARN. ``render_policies.py``'s refusals are checked beside it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT, REGION, KEY_ID = "123456789012", "eu-west-1", "1234abcd-12ab-34cd-56ef-1234567890ab"

AWS = r'''
import json, os, re, sys
LOG = os.environ["STANDIN_LOG"]
args = sys.argv[1:]
def fail(why):
    print(f"aws stand-in: {why}", file=sys.stderr)
    with open(LOG, "a") as f:
        f.write(json.dumps({"error": why}) + "\n")
    sys.exit(252)
def flags(known, boolean=()):
    out, i = {}, 2
    while i < len(args):
        a = args[i]
        if a in boolean:
            out[a] = True; i += 1
        elif a in known and i + 1 < len(args):
            out[a] = args[i + 1]; i += 2
        else:
            fail(f"unknown or incomplete flag {a!r} for {args[:2]}")
    return out
def policy(uri):
    if not uri.startswith("file://"):
        fail(f"policy {uri!r} is not a file:// URI")
    text = open(uri[len("file://"):]).read()
    if re.search(r"PCR[0-9]_SHA384_HEX|ACCOUNT_ID|\bKEY_ID\b|\bREGION\b", text):
        fail("policy still has placeholders")
    return json.loads(text)
def log(**e):
    with open(LOG, "a") as f:
        f.write(json.dumps({"call": args[:2], **e}) + "\n")
key_id = os.environ["STANDIN_KEY_ID"]
if args[:2] == ["kms", "create-key"]:
    f = flags({"--description", "--key-spec", "--policy", "--query", "--output"}, ("--bypass-policy-lockout-safety-check",))
    if f.get("--key-spec") != "SYMMETRIC_DEFAULT":
        fail("the sealing key must be SYMMETRIC_DEFAULT")
    p = policy(f["--policy"])
    log(flags=sorted(f), policy=p)
    meta = {"KeyMetadata": {"KeyId": key_id, "Arn": f"arn:aws:kms:{os.environ['AWS_REGION']}:{os.environ['ACCOUNT_ID']}:key/{key_id}"}}
    if f.get("--query") == "KeyMetadata.KeyId" and f.get("--output") == "text":
        print(key_id)
    else:
        print(json.dumps(meta))
elif args[:2] == ["kms", "create-alias"]:
    f = flags({"--alias-name", "--target-key-id"})
    if not f.get("--alias-name", "").startswith("alias/") or f.get("--target-key-id") != key_id:
        fail(f"create-alias needs alias/NAME and the new key's id; got {f}")
    log(flags=f)
elif args[:2] == ["iam", "put-role-policy"]:
    f = flags({"--role-name", "--policy-name", "--policy-document"})
    log(flags={k: v for k, v in f.items() if k != "--policy-document"}, policy=policy(f["--policy-document"]))
else:
    fail(f"unexpected call {args}")
'''


def _readme_step3() -> str:
    text = (ROOT / "enclave" / "README.md").read_text()
    section = text[text.index("## 3."):text.index("## 4.")]
    return re.search(r"```\n(.*?)```", section, re.S).group(1)


def _pcrs(signed: bool) -> dict:
    pcrs = {f"PCR{i}": os.urandom(48).hex() for i in (0, 1, 2)}
    if signed:
        pcrs["PCR8"] = os.urandom(48).hex()
    return pcrs


def _repo(tmp_path: Path, pcrs: dict) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "enclave", repo / "enclave", ignore=shutil.ignore_patterns("wheelhouse", "out"))
    (repo / "enclave" / "out").mkdir()
    (repo / "enclave" / "out" / "pcrs.json").write_text(json.dumps(pcrs))
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").symlink_to(sys.executable)
    return repo


@pytest.mark.parametrize("signed", [True, False], ids=["signed-image", "unsigned-image"])
def test_readme_step3_runs_against_the_aws_stand_in(tmp_path, signed):
    pcrs = _pcrs(signed)
    repo = _repo(tmp_path, pcrs)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "aws").write_text(f"#!{sys.executable}\n{AWS}")
    (bin_dir / "aws").chmod(0o755)
    log = tmp_path / "aws.jsonl"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ACCOUNT_ID": ACCOUNT, "AWS_REGION": REGION,
           "STANDIN_LOG": str(log), "STANDIN_KEY_ID": KEY_ID}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", _readme_step3()], cwd=repo, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    assert not [c for c in calls if "error" in c], calls
    assert [c["call"] for c in calls] == [["kms", "create-key"], ["kms", "create-alias"], ["iam", "put-role-policy"]]
    wanted = {f"kms:RecipientAttestation:{k}": v for k, v in pcrs.items()}

    key_policy = calls[0]["policy"]
    use = {"kms:Decrypt", "kms:GenerateDataKey"}
    allows = [s for s in key_policy["Statement"] if s["Effect"] == "Allow" and use & set(s["Action"])]
    assert allows and all(s["Condition"]["StringEqualsIgnoreCase"] == wanted for s in allows)
    denied = {k: v for s in key_policy["Statement"] if s["Effect"] == "Deny" and use <= set(s["Action"])
              for k, v in s["Condition"].get("StringNotEqualsIgnoreCase", {}).items()}
    assert denied == wanted  # one Deny per PCR of this build, PCR8 only for a signed image
    assert all(f"arn:aws:iam::{ACCOUNT}:" in json.dumps(s["Principal"]) for s in key_policy["Statement"]
               if s["Effect"] == "Allow")

    parent = calls[2]["policy"]
    arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{KEY_ID}"
    grants = [s for s in parent["Statement"] if s["Effect"] == "Allow" and use & set(s["Action"])]
    assert grants and all(s["Resource"] == arn and s["Condition"]["StringEqualsIgnoreCase"] == wanted for s in grants)
    assert any(s["Effect"] == "Deny" and s["Condition"] == {"Null": {"kms:RecipientAttestation:ImageSha384": "true"}}
               for s in parent["Statement"])


@pytest.mark.parametrize("case", ["debug-zeros", "short-pcr", "bad-account", "region-without-key"])
def test_render_policies_refuses(tmp_path, case):
    pcrs = _pcrs(False)
    account, extra = ACCOUNT, []
    if case == "debug-zeros":
        pcrs["PCR0"] = "0" * 96
    elif case == "short-pcr":
        pcrs["PCR1"] = pcrs["PCR1"][:64]
    elif case == "bad-account":
        account = "ACCOUNT"
    else:
        extra = ["--region", REGION]
    repo = _repo(tmp_path, pcrs)
    out = subprocess.run([sys.executable, "enclave/render_policies.py", "--pcrs", "enclave/out/pcrs.json",
                          "--account", account, "--out", "enclave/out", *extra], cwd=repo, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0
    assert {"debug-zeros": "96 hex digits of a non-debug build", "short-pcr": "96 hex digits",
            "bad-account": "12 digits", "region-without-key": "go together"}[case] in out.stderr
