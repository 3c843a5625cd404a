#!/usr/bin/env bash
# Install nstore with its test extras and run the test suite: `scripts/test.sh [pytest args]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh test
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
