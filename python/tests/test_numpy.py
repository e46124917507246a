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


# ---- the geometries on one array, against numpy's own arithmetic and an exact SVD ----------

def sample(m, n, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal((m, n)).astype(dtype)


def references(G):
    """(D(G), ||G||, ||G||_*) per geometry, written from the definitions (docs/GEOMETRY.md)."""
    rows, cols = np.linalg.norm(G, axis=1, keepdims=True), np.linalg.norm(G, axis=0, keepdims=True)
    U, s, Vt = np.linalg.svd(G.astype(np.float64), full_matrices=False)
    return {
        "sign": (np.sign(G), np.abs(G).max(), np.abs(G).sum()),
        "row": (G / rows, rows.max(), rows.sum()),
        "col": (G / cols, cols.max(), cols.sum()),
        "spectral_exact": (U @ Vt, s.max(), s.sum()),
        "vector_l2": (G / np.linalg.norm(G), np.linalg.norm(G), np.linalg.norm(G)),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(9, 5), (5, 9), (1, 7), (7, 1)])
def test_dualize_and_norms_match_their_definitions(dtype, shape):
    G = sample(*shape, dtype)
    tol = 2e-5 if dtype == np.float32 else 1e-11
    for name, (D, value, dual) in references(G).items():
        ours = steepest.dualize(G, name)
        assert ours.dtype == dtype and ours.shape == G.shape
        assert np.abs(ours - D).max() <= tol * max(1.0, np.abs(D).max()), name
        assert abs(steepest.norm(G, name) - value) <= tol * value, name
        assert abs(steepest.norm(G, name, dual=True) - dual) <= tol * dual, name
        # <G, D(G)> = ||G||_* and ||D(G)|| = 1: the direction is the dual norm's maximizer.
        assert abs(float((G.astype(np.float64) * ours).sum()) - dual) <= 10 * tol * dual, name
        assert abs(steepest.norm(ours, name) - 1.0) <= 10 * tol, name


@pytest.mark.parametrize("name,s", [("row", lambda m, n: n ** -0.5), ("col", lambda m, n: m ** 0.5 / n),
                                    ("sign", lambda m, n: 1.0 / n), ("spectral_exact", lambda m, n: (m / n) ** 0.5)])
def test_mean_normalized_geometries_carry_the_width_scale(name, s):
    G = sample(12, 20, np.float64, seed=1)
    m, n = G.shape
    assert np.allclose(steepest.dualize(G, name, mean=True), s(m, n) * steepest.dualize(G, name), rtol=1e-12)
    assert np.isclose(steepest.norm(G, name, mean=True), steepest.norm(G, name) / s(m, n), rtol=1e-12)


def test_newton_schulz_direction_is_in_its_measured_band():
    G = sample(64, 32, np.float32, seed=2)
    sv = np.linalg.svd(steepest.dualize(G, "spectral").astype(np.float64), compute_uv=False)
    assert 0.68 <= sv.min() and sv.max() <= 1.21  # quintic x5 (docs/GEOMETRY.md's band)


def test_geometry_inputs_are_checked():
    with pytest.raises(ValueError, match="unknown geometry 'rows'.*sign, row"):
        steepest.norm(sample(3, 3, np.float64), "rows")
    with pytest.raises(TypeError):
        steepest.norm(sample(3, 3, np.float64).astype(np.float16), "row")
    assert steepest.norm(np.zeros((0, 4)), "row") == 0.0


def test_the_newton_schulz_planner_is_reachable_and_steers_muon(tmp_path):
    """Muon's default engine plans per shape through the process's planner: a forced engine is
    the one that runs (bitwise the explicit choice's step), small layers keep the reference
    engine, plans round-trip through a file, and a crafted file is refused with nothing changed."""
    planner = steepest.polar_planner()
    planner.clear()
    hp = hyper(lr=0.02)
    try:
        w_small, _ = run("muon", 16, 24, 2, hp)  # 384 entries: the reference engine, not timed
        plans = planner.plans()
        assert [p["how"] for p in plans] == ["small"] and plans[0]["engine"] == "eigen"
        planner.force("eigen")
        w_eigen, _ = run("muon", 96, 800, 2, hp)
        planner.force("gram-restart3")
        w_gram, _ = run("muon", 96, 800, 2, hp)
        planner.force("")
        assert not np.array_equal(w_eigen, w_gram)  # two engines, two roundings
        assert np.abs(w_eigen - w_gram).max() <= 1e-5 * np.abs(w_eigen).max() + 1e-6
        planner.clear()
        planner.set_mode("estimate")  # fewest flops: the Gram form at aspect 8
        w_est, _ = run("muon", 96, 800, 2, hp)
        assert np.array_equal(w_est, w_gram)
        (est,) = [p for p in planner.plans() if p["shape"] == (96, 800)]
        assert est["how"] == "estimated" and est["engine"] == "gram-restart3"
        path = str(tmp_path / "plans.txt")
        planner.save(path)
        planner.clear()
        planner.set_mode("measure")
        planner.load(path)
        assert [(p["shape"], p["engine"], p["how"]) for p in planner.plans()] == [((96, 800), "gram-restart3", "loaded")]
        w_loaded, _ = run("muon", 96, 800, 2, hp)  # the loaded choice runs, nothing is timed
        assert np.array_equal(w_loaded, w_gram)
        with open(path) as f:
            text = f.read()
        bad = tmp_path / "bad.txt"
        bad.write_text(text.replace("gram-restart3\n", "no-such-engine\n"))
        with pytest.raises(RuntimeError, match="line 3"):
            planner.load(str(bad))
        assert [p["how"] for p in planner.plans()] == ["loaded"]
        with pytest.raises(ValueError, match="'measure' or 'estimate'"):
            planner.set_mode("fastest")
    finally:
        planner.force("")
        planner.set_mode("measure")
        planner.clear()
