#!/bin/sh
# Enclave entry point: K listens on a Unix socket inside the enclave; socat relays vsock to it.
#   vsock 5000 (from the parent)  -> unix:/tmp/k.sock   (gRPC + mTLS terminate in K, in here)
#   vsock 5001 (from the parent)  -> K's launch spec on stdin (public: client CA + role registry)
#   K's ready line                -> parent CID 3, vsock 5002
#   KMS: K itself connects AF_VSOCK to parent CID 3, port 8000 (keyservice.kms_endpoint "vsock:3:8000"),
#        where vsock-proxy forwards to kms.<region>.amazonaws.com:443; TLS to KMS terminates in K.
set -eu

KS_SOCK=/tmp/k.sock

ip link set dev lo up 2>/dev/null || true

# Relay parties' and E's connections to K's Unix socket.
socat VSOCK-LISTEN:5000,fork,reuseaddr "UNIX-CONNECT:${KS_SOCK}" &

# The launch spec arrives once over vsock 5001 and is piped straight into K's stdin: it carries the
# parent role's temporary AWS credentials (aws_credentials), so it is never written to a file.
# K: keyservice.attestation=nsm, sealed key via AWS KMS; stdout (the ready line) back to the parent.
socat -u VSOCK-LISTEN:5001,reuseaddr - | python -m ppml_hybrid.keyservice | socat -u - VSOCK-CONNECT:3:5002
