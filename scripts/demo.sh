#!/usr/bin/env bash
# The main job, from a fresh checkout: install, then 8 workers write one file through nstored.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
exec .venv/bin/python scripts/demo.py "$@"
