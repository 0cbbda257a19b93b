#!/usr/bin/env bash
# Test suite: ./test.sh [pytest args...]; slow suites with ./test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_env.sh
exec .venv/bin/python -m pytest "$@"
