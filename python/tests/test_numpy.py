"""steepest._core over numpy arrays: the arrays are viewed, not copied, and the steps are the C++
library's own bits.

STEEPEST_CONVENTION_FIXTURE, when set, is tests/convention_fixture (built by CMake): the C++
library stepping the same weights with the same gradients.
"""
import math
import os
import subprocess

import numpy as np
import pytest

import steepest


def grad_at(size, t, salt):
    """tests/optim_helpers.hpp's grad_at, computed in double and rounded to float32."""
    return np.array([math.sin(0.37 * i * i + 1.3 * t + salt) + 0.1 * t for i in range(size)]).astype(np.float32)


def hyper(**kw):
    h = steepest.Hyper()
    for k, v in kw.items():
        setattr(h, k, v)
    return h


def run(kind, rows, cols, steps, hp, adamw_hp=None):
    w = np.array([0.05 * math.sin(i + 1.0) for i in range(rows * cols)], dtype=np.float32).reshape(rows, cols)
    core = steepest.make(kind, hp, adamw_hp or steepest.Hyper(), ["w"], ["hidden"], [w])
    for t in range(1, steps + 1):
        g = grad_at(rows * cols, t, 0.5).reshape(rows, cols)
        assert core.step([w], [g], 1.0, hp, adamw_hp or steepest.Hyper())
    return w, core


FIXTURE = os.environ.get("STEEPEST_CONVENTION_FIXTURE")


@pytest.mark.skipif(not FIXTURE, reason="STEEPEST_CONVENTION_FIXTURE (tests/convention_fixture) not given")
@pytest.mark.parametrize("rule,shape", [("adamw", (12, 7)), ("adamw", (7, 12)), ("muon", (12, 7)), ("muon", (7, 12))])
def test_same_bits_as_the_cpp_library(rule, shape):
    rows, cols = shape
    args = [FIXTURE, rule, str(rows), str(cols), "5"] + (["original"] if rule == "muon" else [])
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    lib = np.array([float(x) for x in out], dtype=np.float32).reshape(rows, cols)
    if rule == "adamw":
        hp = hyper(lr=0.02, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1)
    else:
        hp = hyper(lr=0.02, beta1=0.95, weight_decay=0.1, shape_factor="muon")
    w, core = run(rule, rows, cols, 5, hp)
    assert core.steps == 5
    assert np.array_equal(w, lib)


def test_arrays_are_stepped_in_place():
    w = np.ones((4, 3), dtype=np.float32)
    view = w[:]  # the same memory
    core = steepest.make("sgd", hyper(lr=0.5, beta1=0.0), steepest.Hyper(), ["w"], ["hidden"], [w])
    core.step([w], [np.full((4, 3), 2.0, dtype=np.float32)], 1.0, hyper(beta1=0.0), steepest.Hyper())
    assert np.array_equal(view, np.zeros((4, 3), dtype=np.float32))  # 1 - 0.5 * 2


def test_lr_factor_scales_the_step():
    a, _ = run("adamw", 5, 4, 3, hyper(lr=0.02))
    w = np.array([0.05 * math.sin(i + 1.0) for i in range(20)], dtype=np.float32).reshape(5, 4)
    core = steepest.make("adamw", hyper(lr=0.04), steepest.Hyper(), ["w"], ["hidden"], [w])
    for t in range(1, 4):
        core.step([w], [grad_at(20, t, 0.5).reshape(5, 4)], 0.5, hyper(), steepest.Hyper())
    assert np.array_equal(w, a)  # lr 0.04 at factor 0.5 is lr 0.02


def test_wrong_inputs_are_refused_and_nothing_changes():
    w = np.ones((4, 3), dtype=np.float32)
    core = steepest.make("adamw", hyper(lr=0.1), steepest.Hyper(), ["w"], ["hidden"], [w])
    with pytest.raises(ValueError, match="'w'"):  # the gradient's shape differs
        core.step([w], [np.ones((3, 4), dtype=np.float32).reshape(2, 6)[:, :5].copy()], 1.0, hyper(), steepest.Hyper())
    with pytest.raises(TypeError):  # float64 is not float32
        core.step([w], [np.ones((4, 3))], 1.0, hyper(), steepest.Hyper())
    with pytest.raises(FloatingPointError):
        core.step([w], [np.full((4, 3), np.nan, dtype=np.float32)], 1.0, hyper(), steepest.Hyper())
    with pytest.raises(ValueError, match="unknown optimizer"):
        steepest.make("adam", steepest.Hyper(), steepest.Hyper(), ["w"], ["hidden"], [w])
    with pytest.raises(ValueError, match="unknown role"):
        steepest.make("adamw", steepest.Hyper(), steepest.Hyper(), ["w"], ["weights"], [w])
    assert np.array_equal(w, np.ones((4, 3), dtype=np.float32))
    assert core.steps == 0


def test_every_named_optimizer_steps():
    kinds = ["sgd", "sgd_nesterov", "adamw", "adamw_rescaled", "sign_descent", "lion", "moga_row", "moga_col",
             "moga_row_momentum", "cautious_adamw", "muon", "normuon", "adamuon", "polargrad", "muon_eq",
             "muon_plus", "scion", "scion_unconstrained"]
    for kind in kinds:
        w = np.array([0.05 * math.sin(i + 1.0) for i in range(48)], dtype=np.float32).reshape(8, 6)
        b = np.zeros(6, dtype=np.float32)
        before = w.copy()
        shape = "muon" if kind in ("muon", "muon_eq", "muon_plus") else "none"
        hp = hyper(lr=0.01, shape_factor=shape)
        core = steepest.make(kind, hp, hyper(lr=0.01), ["w", "b"], ["hidden", "vector"], [w, b])
        core.step([w, b], [grad_at(48, 1, 0.5).reshape(8, 6), grad_at(6, 1, 1.5)], 1.0, hp, hyper(lr=0.01))
        assert np.all(np.isfinite(w)) and not np.array_equal(w, before), kind
        assert sorted(n for n, _, _ in core.operator_norms()) == ["b", "w"], kind
