#!/usr/bin/env bash
# Create ./.venv and install ohio_layers with every extra CI tests (fresh machine, CPU only).
# torch is pinned to the local CPU wheel first: an open torch requirement pulls a multi-GB
# CUDA build. cvxpylayers is left out: it needs numpy>=2, robosuite (via mink) needs numpy<2.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[all,test]"
