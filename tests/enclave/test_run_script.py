"""enclave/run.sh, run for real against stand-ins for the AWS tools it calls.

No AWS here: ``nitro-cli``, ``vsock-proxy``, ``socat`` (the vsock ends) and ``curl`` (IMDSv2)
are replaced by small programs that check the arguments AWS documents for them and answer as
the real ones do; ``jq`` and the parent's sealed-key store (``python -m ppml_hybrid
sealed-store``, on a real AF_VSOCK listener) are the real ones. Checked: the sequence (boot,
IMDSv2 token, role, credentials, spec to the enclave), the config and proxy arguments, IMDSv2 (a token
on every metadata read), the spec the enclave receives (credentials added there and nowhere
else), and the refusals of a spec for another region or without the parent's store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CREDS = {"Code": "Success", "AccessKeyId": "ASIATESTKEY", "SecretAccessKey": "test-secret", "Token": "test-token",
         "Expiration": "2026-12-02T06:00:00Z", "Type": "AWS-HMAC"}

COMMON = r'''
import json, os, sys, time
LOG = os.environ["STANDIN_LOG"]
def log(**event):
    with open(LOG, "a") as f:
        f.write(json.dumps({"tool": os.path.basename(sys.argv[0]), "time": time.time(), **event}) + "\n")
def fail(why):
    log(error=why)
    print(f"{os.path.basename(sys.argv[0])} stand-in: {why}", file=sys.stderr)
    sys.exit(2)
args = sys.argv[1:]
'''

NITRO_CLI = COMMON + r'''
# nitro-cli run-enclave --config FILE (the JSON form of --eif-path/--cpu-count/--memory/--enclave-cid/--debug-mode)
if args[:1] != ["run-enclave"] or len(args) != 3 or args[1] != "--config":
    fail(f"expected run-enclave --config FILE, got {args}")
cfg = json.load(open(args[2]))
need = {"eif_path", "cpu_count", "memory_mib"}
if not need <= set(cfg):
    fail(f"config lacks {sorted(need - set(cfg))}")
if not os.path.isfile(cfg["eif_path"]):
    fail(f"eif_path {cfg['eif_path']} does not exist (relative to {os.getcwd()})")
if cfg.get("debug_mode"):
    fail("debug_mode true: PCRs read as zeros, KMS would refuse")
if cfg["memory_mib"] < 4 * os.path.getsize(cfg["eif_path"]) / 2**20:
    fail("memory_mib below four times the image")
log(argv=args, config=cfg)
print(json.dumps({"EnclaveName": cfg.get("enclave_name", "x"), "EnclaveID": "i-0123-enc0123", "ProcessID": 4242,
                  "EnclaveCID": cfg.get("enclave_cid", 16), "NumberOfCPUs": cfg["cpu_count"], "CPUIDs": [1, 3],
                  "MemoryMiB": cfg["memory_mib"]}, indent=4))
'''

VSOCK_PROXY = COMMON + r'''
# vsock-proxy LOCAL_PORT REMOTE_ADDR REMOTE_PORT [--config FILE]: the remote must be in the allowlist
import yaml
if len(args) != 5 or args[3] != "--config" or not args[0].isdigit() or not args[2].isdigit():
    fail(f"expected PORT HOST PORT --config FILE, got {args}")
allow = yaml.safe_load(open(args[4]))["allowlist"]
if {"address": args[1], "port": int(args[2])} not in allow:
    fail(f"{args[1]}:{args[2]} is not in the allowlist {allow}")
log(argv=args)
time.sleep(float(os.environ.get("STANDIN_PROXY_S", "4")))
'''

SOCAT = COMMON + r'''
# the two vsock ends run.sh uses: K's ready line in (listen 5002), the spec out (connect CID:5001)
if args[:2] == ["-u", "VSOCK-LISTEN:5002,reuseaddr"] and args[2].startswith("CREATE:"):
    log(argv=args, role="ready-listener")
    time.sleep(1.0)  # K boots, then the enclave's entry dials in with the ready line
    with open(args[2][len("CREATE:"):], "w") as f:
        f.write('{"address": "unix:/tmp/k.sock", "material_sha256": "ab12"}\n')
elif args[:2] == ["-u", "-"] and args[2].startswith("VSOCK-CONNECT:"):
    cid, port = args[2].split(":")[1:]
    spec = json.loads(sys.stdin.read())
    log(argv=args, role="spec-sender", cid=int(cid), port=int(port), spec_keys=sorted(spec),
        credentials_keys=sorted(spec.get("aws_credentials", {})), sealed=spec["keyservice"]["sealed_key_path"])
    with open(os.environ["STANDIN_SPEC_OUT"], "w") as f:
        json.dump(spec, f)
else:
    fail(f"unexpected socat use {args}")
'''

CURL = COMMON + r'''
# IMDSv2: PUT /latest/api/token with a TTL header, then GETs carrying the token
url = [a for a in args if a.startswith("http")][0]
headers = [args[i + 1] for i, a in enumerate(args) if a == "-H"]
if url.endswith("/latest/api/token"):
    if "PUT" not in args or not any(h.startswith("X-aws-ec2-metadata-token-ttl-seconds:") for h in headers):
        fail("IMDSv2 token request needs PUT and the TTL header")
    log(argv=args, what="token")
    print("imds-token-1", end="")
    sys.exit(0)
if "X-aws-ec2-metadata-token: imds-token-1" not in headers:
    fail(f"metadata read without the IMDSv2 token: {args}")
if url.endswith("/meta-data/iam/security-credentials/"):
    log(argv=args, what="role")
    print("ppml-hybrid-keyservice-parent", end="")
elif url.endswith("/meta-data/iam/security-credentials/ppml-hybrid-keyservice-parent"):
    log(argv=args, what="credentials")
    print(os.environ["STANDIN_CREDS"])
else:
    fail(f"unexpected URL {url}")
'''


@pytest.fixture()
def deployment(tmp_path):
    """A copy of enclave/ with a (fake) built image, the stand-ins on PATH before the real tools."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "enclave", repo / "enclave", ignore=shutil.ignore_patterns("wheelhouse", "out"))
    (repo / "enclave" / "out").mkdir()
    (repo / "enclave" / "out" / "keyservice.eif").write_bytes(os.urandom(1 << 20))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("nitro-cli", NITRO_CLI), ("vsock-proxy", VSOCK_PROXY), ("socat", SOCAT), ("curl", CURL)):
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{body}")
        path.chmod(0o755)
    spec = json.loads(json.dumps({"run": {}, "keyservice": {"kms_region": "eu-west-1",
                                                             "sealed_key_path": "vsock:3:5003"}}))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "AWS_REGION": "eu-west-1",
           "STANDIN_LOG": str(tmp_path / "calls.jsonl"), "STANDIN_SPEC_OUT": str(tmp_path / "enclave-got.json"),
           "STANDIN_CREDS": json.dumps(CREDS), "PPML_PYTHON": sys.executable,
           "PPML_SEALED_KEY": str(tmp_path / "parent" / "k.sealed"), "PYTHONPATH": str(ROOT)}
    return repo, spec, env, tmp_path


def _run(repo: Path, spec: dict, env: dict, tmp: Path) -> subprocess.CompletedProcess:
    spec_file = tmp / "spec.json"
    spec_file.write_text(json.dumps(spec))
    return subprocess.run(["bash", "enclave/run.sh", str(spec_file)], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=120)


def _calls(tmp: Path) -> list:
    path = tmp / "calls.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed (run.sh needs it)")
def test_run_script_against_aws_stand_ins(deployment):
    repo, spec, env, tmp = deployment
    out = _run(repo, spec, env, tmp)
    assert out.returncode == 0, out.stdout + out.stderr
    calls = _calls(tmp)
    assert not [c for c in calls if "error" in c], calls
    order = [c.get("role") or c.get("what") or c["tool"] for c in calls]
    # (the background tools' start order is the script's text: test_deployment_files checks it)
    assert {"vsock-proxy", "ready-listener"} <= set(order)
    assert order.index("nitro-cli") < order.index("token") < order.index("role") < order.index("credentials") \
        < order.index("spec-sender")
    boot = next(c for c in calls if c["tool"] == "nitro-cli")
    assert boot["config"]["enclave_cid"] == 16 and boot["config"]["debug_mode"] is False
    sent = next(c for c in calls if c.get("role") == "spec-sender")
    assert (sent["cid"], sent["port"]) == (16, 5001) and sent["sealed"] == "vsock:3:5003"
    got = json.loads((tmp / "enclave-got.json").read_text())
    assert got["aws_credentials"] == {k: CREDS[k] for k in ("AccessKeyId", "SecretAccessKey", "Token", "Expiration")}
    assert "aws_credentials" not in json.loads((tmp / "spec.json").read_text())  # never written on the parent
    assert "test-secret" not in out.stdout + out.stderr
    assert "K ready:" in out.stdout and "VSOCK-CONNECT:16:5000" in out.stdout
    assert "sealed-key store on vsock:5003" in out.stderr  # the real store ran, and stopped with the script


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed (run.sh needs it)")
@pytest.mark.parametrize("bad", ["region", "store"])
def test_run_script_refuses_a_spec_for_another_region_or_without_the_parents_store(deployment, bad):
    repo, spec, env, tmp = deployment
    if bad == "region":
        spec["keyservice"]["kms_region"] = "us-east-1"
    else:
        spec["keyservice"]["sealed_key_path"] = "/tmp/k.sealed"  # the enclave's RAM disk: lost at restart
    out = _run(repo, spec, env, tmp)
    assert out.returncode == 1
    assert ("kms_region must be eu-west-1" if bad == "region" else "sealed_key_path must be vsock:3:5003") in out.stderr
    assert not [c for c in _calls(tmp) if c["tool"] == "nitro-cli"]  # refused before anything started
