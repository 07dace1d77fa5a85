#!/usr/bin/env bash
# Create ./.venv and install ohio_layers with every extra CI tests (fresh machine, CPU only).
# torch is pinned to the local CPU wheel first: an open torch requirement pulls a multi-GB
# CUDA build. cvxpylayers is left out: it needs numpy>=2, robosuite (via mink) needs numpy<2.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q torch==2.13.0
# constraints.txt holds what must stay together next to robosuite (numpy<2, pyarrow<26, minari 0.5.3, d3rlpy 2.8.0)
.venv/bin/python -m pip install -q -c constraints.txt -e ".[all,test]"
