#!/usr/bin/env bash
# Build the enclave image file (EIF) and record its measurements.
#   enclave/build.sh [--sign CERT.pem KEY.pem]
# Outputs: enclave/out/keyservice.eif, enclave/out/build.json (nitro-cli output),
#          enclave/out/pcrs.json ({"PCR0": ..., "PCR1": ..., "PCR2": ..., "PCR8": ...}).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/.." && pwd)"
OUT="${HERE}/out"
TAG="ppml-hybrid-keyservice:enclave"
mkdir -p "${OUT}" "${HERE}/wheelhouse/debs"

# 1. Wheelhouse: the project and its locked dependencies (build time only; the image installs offline).
(cd "${ROOT}" && uv build --wheel --out-dir "${HERE}/wheelhouse")
(cd "${ROOT}" && uv export --frozen --no-dev --no-hashes --no-emit-project > "${OUT}/requirements.txt")
pip download --only-binary=:all: --python-version 3.10 --platform manylinux_2_35_x86_64 \
    --platform manylinux2014_x86_64 -r "${OUT}/requirements.txt" -d "${HERE}/wheelhouse"
# socat + iproute2 .debs for Debian 12 (the base image's release)
docker run --rm -v "${HERE}/wheelhouse/debs:/out" \
    python:3.10-slim-bookworm@sha256:9643927a6fc74bd81b0f1bbb5cce3cb4a491f46b4c5dbee770f28e575f180015 \
    sh -c 'apt-get update && apt-get install -y --download-only socat iproute2 && cp /var/cache/apt/archives/*.deb /out/'

# 2. Image, then EIF.
docker build -f "${HERE}/Dockerfile" -t "${TAG}" "${ROOT}"
SIGN=()
if [[ "${1:-}" == "--sign" ]]; then
    SIGN=(--signing-certificate "$2" --private-key "$3")
fi
nitro-cli build-enclave --docker-uri "${TAG}" --output-file "${OUT}/keyservice.eif" "${SIGN[@]}" > "${OUT}/build.json"

# 3. Measurements: these go into the KMS key policy and into every client's keyservice.expected_pcrs.
jq '.Measurements | {PCR0, PCR1, PCR2} + (if .PCR8 then {PCR8} else {} end)' "${OUT}/build.json" > "${OUT}/pcrs.json"
echo "PCRs recorded in ${OUT}/pcrs.json:"
cat "${OUT}/pcrs.json"
