#!/usr/bin/env bash
# Start K's enclave on the parent instance, its vsock-proxy to KMS, and hand it the launch spec.
#   enclave/run.sh SPEC.json        (SPEC.json: a KeyServiceSpec as ppml_hybrid writes it; no secrets)
# K's KMS calls need this instance role's temporary credentials (IMDS is unreachable from the enclave):
# they go from IMDSv2 through jq straight into the vsock pipe as the spec's "aws_credentials" and are
# never written to a file, put on a command line or into the environment.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SPEC="${1:?usage: run.sh SPEC.json}"
REGION="${AWS_REGION:?set AWS_REGION}"
CID="$(jq -r .enclave_cid "${HERE}/enclave-config.json")"
IMDS=http://169.254.169.254/latest
jq -e --arg r "${REGION}" '.keyservice.kms_region == $r' "${SPEC}" >/dev/null \
    || { echo "SPEC.json: keyservice.kms_region must be ${REGION} (the KMS key's region)" >&2; exit 1; }
jq -e '.keyservice.sealed_key_path == "vsock:3:5003"' "${SPEC}" >/dev/null \
    || { echo "SPEC.json: keyservice.sealed_key_path must be vsock:3:5003 (the parent's sealed-key store)" >&2; exit 1; }

# KMS only, through the allowlisted proxy (vsock 8000 -> kms.REGION.amazonaws.com:443).
vsock-proxy 8000 "kms.${REGION}.amazonaws.com" 443 --config "${HERE}/vsock-proxy.yaml" &
PROXY=$!
trap 'kill "${PROXY}" 2>/dev/null || true' EXIT

# K's sealed key stays on this (untrusted) parent: it is ciphertext that only an enclave with the
# pinned PCRs can unseal through KMS. The store hands it to K at start (a restart unseals instead
# of making new keys) and keeps what K seals on its first start (vsock 5003; the spec's
# keyservice.sealed_key_path is "vsock:3:5003").
PY="${PPML_PYTHON:-${HERE}/../.venv/bin/python}"
SEALED="${PPML_SEALED_KEY:-/var/lib/ppml-hybrid/k.sealed}"
"${PY}" -m ppml_hybrid sealed-store --listen vsock:5003 --file "${SEALED}" &
STORE=$!
trap 'kill "${PROXY}" "${STORE}" 2>/dev/null || true' EXIT

# Listen for K's ready line (address, TLS trust certificate, material hash; vsock 5002) BEFORE the
# enclave boots: entry.sh connects to it as soon as K is up, and a connection to a port nobody
# listens on yet is refused (the ready line would be lost).
socat -u VSOCK-LISTEN:5002,reuseaddr "CREATE:${HERE}/out/ready.line" &
READY=$!

nitro-cli run-enclave --config "${HERE}/enclave-config.json"
sleep 2
IMDS_TOKEN="$(curl -sf -X PUT "${IMDS}/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 300")"
ROLE="$(curl -sf -H "X-aws-ec2-metadata-token: ${IMDS_TOKEN}" "${IMDS}/meta-data/iam/security-credentials/")"
jq -c --slurpfile c <(curl -sf -H "X-aws-ec2-metadata-token: ${IMDS_TOKEN}" \
        "${IMDS}/meta-data/iam/security-credentials/${ROLE}") \
    '. + {aws_credentials: ($c[0] | {AccessKeyId, SecretAccessKey, Token, Expiration})}' "${SPEC}" \
    | socat -u - "VSOCK-CONNECT:${CID}:5001"
wait "${READY}"
echo "K ready: $(cat "${HERE}/out/ready.line")"
echo "Parties and E connect to vsock ${CID}:5000 through a parent-side relay, e.g.:"
echo "  socat TCP-LISTEN:7443,fork,reuseaddr VSOCK-CONNECT:${CID}:5000"
wait "${PROXY}"
