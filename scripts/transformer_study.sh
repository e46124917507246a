#!/usr/bin/env bash
# The transformer study (examples/transformer_study): set-up, runs, tables and figures.
#   bash scripts/transformer_study.sh quick    # about 7 minutes of runs on 2 cores
#   bash scripts/transformer_study.sh full     # about 3.5 hours; resumes where it stopped
# Set-up, once: the Debian packages (scripts/deps.sh), then a venv in build-study/ over Debian's
# Python with PyPI's torch and matplotlib, and this repository's package built
# without its CUDA part (the study runs on the CPU). Results: build-study/<mode>/runs.jsonl, the
# tables on standard output and in build-study/<mode>/tables.md, figures beside them.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-quick}
bash scripts/deps.sh
venv=build-study/pyenv
py=$venv/bin/python
if ! { [ -x "$py" ] && "$py" -c "import torch, steepest.torch, matplotlib" 2>/dev/null; }; then
  rm -rf "$venv"
  python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install --quiet torch matplotlib   # PyPI (torch: about 50 s and 5 GB, once)
  "$venv/bin/pip" install --quiet . -Ccmake.define.STEEPEST_PYTHON_CUDA=OFF
fi
out=build-study/$mode
"$py" examples/transformer_study/study.py --mode "$mode" --out "$out" --threads "$(nproc)"
"$py" examples/transformer_study/analyze.py "$out/runs.jsonl" --figures "$out" | tee "$out/tables.md"
