#!/usr/bin/env bash
# Main job: ./train.sh [hydra overrides...], e.g. ./train.sh mode=plaintext or ./train.sh -m split_layer=3,4,5
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_env.sh
exec .venv/bin/python train.py "$@"
