#!/bin/sh
# Enclave entry point: K listens on a Unix socket inside the enclave; socat relays vsock to it.
#   vsock 5000 (from the parent)  -> unix:/tmp/k.sock   (gRPC + mTLS terminate in K, in here)
#   vsock 5001 (from the parent)  -> K's launch spec on stdin (public: client CA + role registry)
#   K's ready line                -> parent CID 3, vsock 5002
#   https://kms.$AWS_REGION.amazonaws.com -> 127.0.0.1:8443 -> parent CID 3, vsock 8000 (vsock-proxy)
set -eu

: "${AWS_REGION:?AWS_REGION is baked in at build time}"
KS_SOCK=/tmp/k.sock
SPEC=/tmp/spec.json

ip link set dev lo up 2>/dev/null || true

# KMS through the parent's vsock-proxy (TLS to KMS terminates here, in the enclave).
socat TCP-LISTEN:8443,bind=127.0.0.1,fork,reuseaddr VSOCK-CONNECT:3:8000 &

# The launch spec arrives once over vsock (it holds no secret of K's).
socat -u VSOCK-LISTEN:5001,reuseaddr "CREATE:${SPEC}"

# Relay parties' and E's connections to K's Unix socket.
socat VSOCK-LISTEN:5000,fork,reuseaddr "UNIX-CONNECT:${KS_SOCK}" &

# K: keyservice.attestation=nsm, sealed key via KMS; stdout (the ready line) back to the parent.
python -m ppml_hybrid.keyservice < "${SPEC}" | socat -u - VSOCK-CONNECT:3:5002
