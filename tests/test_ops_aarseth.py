"""aits.ops.aarseth_derivatives (CPU): agreement with aits.reference, edge cases,
determinism, registration (opcheck) and refusal of gradients.

The bad-input errors it shares with the other ops (shapes, dtypes, signs,
softening, G) are in test_ops_errors.py, which runs every op on each."""

from __future__ import annotations

import pytest
import torch
from helpers import DTYPES, assert_close_rel, make_system

from aits import reference
from aits.ops import aarseth_derivatives

F64 = torch.float64
NAMES = ("acc", "jerk", "snap", "crackle")
# float32: crackle sums terms up to ~1/s^5, which cancel to a much smaller total
TOL = {F64: 1e-12, torch.float32: 1e-4}


def _compare(s: dict, softening: float, G: float, dtype: torch.dtype) -> None:
    got = aarseth_derivatives(s["pos"], s["vel"], s["mass"], softening, G)
    want = reference.aarseth_derivatives(
        *(s[k].double() for k in ("pos", "vel", "mass")), softening, G)
    for name, g, w in zip(NAMES, got, want):
        assert g.shape == s["pos"].shape and g.dtype == dtype, name
        assert_close_rel(g, w.to(dtype), TOL[dtype])


# N = 1 and 2 edge cases; 7 and 33 below and above a vector width; 130 and 200:
# several row blocks (an odd count, where the middle block is a task alone; an even one).
@pytest.mark.parametrize("n,batch", [(1, None), (2, None), (2, 3), (7, None), (33, 2),
                                     (130, None), (200, 2)])
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("softening", [0.0, 0.3])
def test_matches_reference_float64(n, batch, dim, softening):
    _compare(make_system(n, dim, batch, F64, seed=n), softening, 1.3, F64)


@pytest.mark.parametrize("dim", [2, 3])
def test_matches_reference_float32(dim):
    _compare(make_system(40, dim, 2, torch.float32, seed=3), 0.1, 1.0, torch.float32)


def test_one_body_feels_nothing():
    s = make_system(1, 3, 2)
    for t in aarseth_derivatives(s["pos"], s["vel"], s["mass"], 0.1):
        assert torch.equal(t, torch.zeros_like(t))


def test_empty_batch_and_zero_bodies():
    for shape in ((0, 5, 3), (2, 0, 2)):
        pos = torch.zeros(shape, dtype=F64)
        out = aarseth_derivatives(pos, pos, torch.ones(shape[:-1], dtype=F64))
        assert all(t.shape == shape for t in out)


def test_two_body_circular_orbit_by_hand():
    """Relative circular orbit of radius r at angular speed w: |a| = w^2 r, |j| = w^3 r,
    |s| = w^4 r, |c| = w^5 r for the reduced body (scaled by m_other / M here)."""
    r, M = 2.0, 1.0
    w = (M / r**3) ** 0.5
    pos = torch.tensor([[-r / 2, 0.0], [r / 2, 0.0]], dtype=F64)
    vel = torch.tensor([[0.0, -w * r / 2], [0.0, w * r / 2]], dtype=F64)
    mass = torch.tensor([M / 2, M / 2], dtype=F64)
    for p, t in enumerate(aarseth_derivatives(pos, vel, mass)):
        want = w ** (p + 2) * r / 2
        torch.testing.assert_close(t.norm(dim=-1), torch.full((2,), want, dtype=F64),
                                   rtol=1e-13, atol=0)


def test_coincident_bodies_with_softening_are_finite_and_match():
    s = make_system(6, 3, None)
    s["pos"][3] = s["pos"][1]
    s["vel"][3] = s["vel"][1] + 0.1
    _compare(s, 0.2, 1.0, F64)
    out = aarseth_derivatives(s["pos"], s["vel"], s["mass"], 0.2)
    assert all(torch.isfinite(t).all() for t in out)


def test_coincident_bodies_without_softening_are_not_finite():
    """As for the force: distinct bodies at one point give NaN, never a silent 0."""
    s = make_system(5, 2, None)
    s["pos"][4] = s["pos"][0]
    acc, jerk, snap, crackle = aarseth_derivatives(s["pos"], s["vel"], s["mass"])
    for t in (acc, jerk, snap, crackle):
        assert not torch.isfinite(t[0]).all() and not torch.isfinite(t[4]).all()


def test_zero_mass_bodies_feel_but_do_not_pull():
    s = make_system(9, 3, None)
    s["mass"][[2, 5]] = 0.0
    got = aarseth_derivatives(s["pos"], s["vel"], s["mass"], 0.05)
    keep = torch.tensor([i not in (2, 5) for i in range(9)])
    without = aarseth_derivatives(s["pos"][keep], s["vel"][keep], s["mass"][keep], 0.05)
    for g, w in zip(got, without):
        assert_close_rel(g[keep], w, 1e-12)
        assert torch.isfinite(g).all() and (g[~keep].abs().sum(-1) > 0).all()


def test_batched_equals_one_system_at_a_time():
    s = make_system(70, 3, 3, seed=4)
    batched = aarseth_derivatives(s["pos"], s["vel"], s["mass"], 0.01)
    for b in range(3):
        single = aarseth_derivatives(s["pos"][b], s["vel"][b], s["mass"][b], 0.01)
        for x, y in zip(batched, single):
            assert torch.equal(x[b], y)


def test_non_contiguous_inputs():
    s = make_system(20, 3, 2)
    pos, vel = (s[k].transpose(0, 1).contiguous().transpose(0, 1) for k in ("pos", "vel"))
    assert not pos.is_contiguous() and not vel.is_contiguous()
    want = aarseth_derivatives(s["pos"].contiguous(), s["vel"], s["mass"])
    for g, w in zip(aarseth_derivatives(pos, vel, s["mass"]), want):
        assert torch.equal(g, w)


def test_deterministic_for_any_thread_count():
    s = make_system(300, 3, 2, seed=9)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = aarseth_derivatives(s["pos"], s["vel"], s["mass"], 0.01)
        torch.set_num_threads(2)
        for _ in range(2):
            two = aarseth_derivatives(s["pos"], s["vel"], s["mass"], 0.01)
            assert all(torch.equal(a, b) for a, b in zip(one, two))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [None, 2])
def test_opcheck(dtype, batch):
    s = make_system(9, 3, batch, dtype)
    torch.library.opcheck(torch.ops.aits.aarseth_derivatives.default,
                          (s["pos"], s["vel"], s["mass"], 0.1, 1.3))


def test_all_meta_gives_shapes():
    s = make_system(5, 2, 3)
    out = aarseth_derivatives(*(s[k].to("meta") for k in ("pos", "vel", "mass")))
    assert [t.shape for t in out] == [s["pos"].shape] * 4
    assert all(t.device.type == "meta" for t in out)


@pytest.mark.parametrize("name", ["pos", "vel", "mass"])
def test_inputs_that_require_grad_are_refused(name):
    s = make_system(4, 3, 2)
    s[name] = s[name].clone().requires_grad_()
    args = (s["pos"], s["vel"], s["mass"])
    with pytest.raises(ValueError, match=r"aits.aarseth_derivatives is not differentiable, but "
                                         r"pos, vel or mass requires grad; pass pos.detach\(\), "
                                         r"vel.detach\(\) and mass.detach\(\)"):
        aarseth_derivatives(*args)
    with torch.no_grad():
        out = aarseth_derivatives(*args)
    assert not any(t.requires_grad for t in out)
