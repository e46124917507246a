"""Shared pieces of the Python cross-checks: a check printer and optim_test::grad_at's formula."""
import math

failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def grad_at_list(size, t, salt):
    """optim_test::grad_at (tests/optim_helpers.hpp): full rank, different at every step."""
    return [math.sin(0.37 * i * i + 1.3 * t + salt) + 0.1 * t for i in range(size)]
