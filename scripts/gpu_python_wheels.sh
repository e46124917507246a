#!/usr/bin/env bash
# Puts the Python package's build tools (nanobind, scikit-build-core and theirs, pytest) into
# .gpu-deps/wheels, for scripts/gpu_checks.sh on a GPU machine that cannot reach PyPI. Run here,
# after ../shared/tools/gpu-carry.sh, with PyPI reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu-deps/wheels
python3 -m pip download --quiet --only-binary=:all: -d .gpu-deps/wheels nanobind scikit-build-core pytest
ls .gpu-deps/wheels
