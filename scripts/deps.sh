#!/usr/bin/env bash
# Installs the Debian packages steepest needs to build its tests, examples and benchmarks,
# `fortunes` (English text: the width-transfer demo's default corpus), and Python 3 with numpy and
# venv (the checkpoint cross-check and the CUDA call model; scripts/test.sh adds PyPI's
# safetensors in a venv), libtorch-dev (the libtorch adapter's tests and example) and Open MPI
# (libopenmpi-dev, openmpi-bin: the sharded optimizer's tests under mpirun).
# libdnnl-dev: oneDNN, for the bf16 Newton-Schulz products (polar/onednn.hpp) and their tests;
# libopenblas-dev and pkgconf: OpenBLAS, found by pkg-config, for polar/openblas.hpp (SYRK products).
# doxygen: the API reference (scripts/api_docs.sh), which a test keeps complete.
# python3-dev: the Python package's extension (pip install .; scripts/test.sh builds it).
# Uses sudo when not root. Skips apt entirely when everything is already there.
set -euo pipefail
pkgs=(cmake g++ make libeigen3-dev doctest-dev libbenchmark-dev fortunes python3 python3-dev python3-numpy python3-venv libtorch-dev libopenmpi-dev openmpi-bin libdnnl-dev libopenblas-dev pkgconf doxygen)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${missing[@]}"
fi
