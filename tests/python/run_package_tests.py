#!/usr/bin/env python3
"""Runs the Python package's tests (python/tests) with pytest, in a Python where the package is
installed (scripts/test.sh installs it, and pytest, into its venv with `pip install .`).

    run_package_tests.py TESTS_DIR

Exit 77 (CTest: skipped) where the package or pytest is missing, except under CI=true, where
that is an error. torch's tests skip themselves where torch is not installed (under CI=true, a
missing torch is an error).
"""
import os
import sys

try:
    import pytest
    import steepest._core  # noqa: F401
except ImportError as e:
    print("%s: %s (install the package: pip install . ; and pytest)" % ("error" if os.environ.get("CI") == "true" else "skipped", e))
    sys.exit(1 if os.environ.get("CI") == "true" else 77)
if os.environ.get("CI") == "true":
    try:
        import torch  # noqa: F401
    except ImportError as e:
        print("error: %s (CI installs torch from PyPI: scripts/test.sh)" % e)
        sys.exit(1)
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", sys.argv[1]]))
