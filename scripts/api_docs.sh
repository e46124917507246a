#!/usr/bin/env bash
# The API reference, generated from the headers' own comments by Doxygen (Debian's package):
#
#   bash scripts/api_docs.sh [out-dir]      # default: build-docs; open <out-dir>/html/index.html
#
# Every public type, function and member must carry a documentation comment: Doxygen's warnings
# about undocumented entities are listed in <out-dir>/warnings.txt and make the script fail.
# Implementation namespaces (detail, kernels, eigen_detail, simd, ...) are left out: they are not
# the API.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:-$here/build-docs}" && cd "${1:-$here/build-docs}" && pwd)"
if ! command -v doxygen >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y doxygen
fi
cd "$here"
rm -f "$out/warnings.txt"
doxygen - <<CONFIG
PROJECT_NAME           = steepest
PROJECT_BRIEF          = "Neural-network optimizers from norm geometry (header-only C++17)"
OUTPUT_DIRECTORY       = $out
INPUT                  = include/steepest README.md docs/OPTIMIZERS.md docs/GEOMETRY.md docs/CUDA.md
USE_MDFILE_AS_MAINPAGE = README.md
FILE_PATTERNS          = *.hpp *.cuh *.md
EXTENSION_MAPPING      = cuh=C++
RECURSIVE              = YES
EXTRACT_ALL            = NO
EXTRACT_STATIC         = YES
HIDE_UNDOC_MEMBERS     = NO
EXCLUDE_SYMBOLS        = *::detail *::detail::* detail *::kernels *::kernels::* *::eigen_detail* *::simd* *::reach::* *::json::* *::test_skip* *::Elem *::Elem::* *::State::*
ENABLE_PREPROCESSING   = YES
MACRO_EXPANSION        = YES
EXPAND_ONLY_PREDEF     = YES
PREDEFINED             = STEEPEST_HD= STEEPEST_RESTRICT= __global__= __device__= __host__= __launch_bounds__(x)=
WARN_IF_UNDOCUMENTED   = YES
WARN_IF_DOC_ERROR      = NO
WARN_NO_PARAMDOC       = NO
WARN_LOGFILE           = $out/warnings.txt
QUIET                  = YES
GENERATE_LATEX         = NO
HAVE_DOT               = NO
GENERATE_HTML          = YES
SOURCE_BROWSER         = YES
JAVADOC_AUTOBRIEF      = YES
CONFIG
undocumented=$(grep -c "is not documented" "$out/warnings.txt" || true)
echo "API reference: $out/html/index.html; undocumented public entities: $undocumented"
if [ "$undocumented" -gt 0 ]; then
  grep "is not documented" "$out/warnings.txt" | sed "s|$here/||" | head -50
  exit 1
fi
