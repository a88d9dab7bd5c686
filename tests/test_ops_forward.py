"""Forward results of the native ops against the pure-torch reference."""

from __future__ import annotations

import pytest
import torch
from helpers import DTYPES, RTOL, assert_close_rel, make_system

import aits
from aits import reference as ref

SHAPES = [(1, None), (2, None), (7, None), (1, 3), (2, 3), (33, 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("n,batch", SHAPES)
@pytest.mark.parametrize("softening", [0.0, 0.3])
def test_accelerations_match_reference(dtype, dim, n, batch, softening):
    s = make_system(n, dim, batch, dtype)
    got = aits.accelerations(s["pos"], s["mass"], softening, G=1.7)
    want = ref.accelerations(s["pos"], s["mass"], softening, G=1.7)
    assert_close_rel(got, want, RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("n,batch", SHAPES)
@pytest.mark.parametrize("softening", [0.0, 0.3])
def test_potential_energy_matches_reference(dtype, dim, n, batch, softening):
    s = make_system(n, dim, batch, dtype)
    got = aits.potential_energy(s["pos"], s["mass"], softening, G=0.5)
    want = ref.potential_energy(s["pos"], s["mass"], softening, G=0.5)
    assert got.shape == (() if batch is None else (batch,))
    assert_close_rel(got, want, RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("n,batch", SHAPES)
@pytest.mark.parametrize("with_acc", [False, True])
def test_leapfrog_step_matches_reference(dtype, dim, n, batch, with_acc):
    s = make_system(n, dim, batch, dtype)
    acc = aits.accelerations(s["pos"], s["mass"], 0.1) if with_acc else None
    got = aits.leapfrog_step(s["pos"], s["vel"], s["mass"], s["dt"], 0.1, 1.0, acc)
    want = ref.leapfrog_step(s["pos"], s["vel"], s["mass"], s["dt"], 0.1, 1.0, acc)
    for g, w in zip(got, want):
        assert_close_rel(g, w, RTOL[dtype])


def test_scalar_dt_applies_to_every_system():
    s = make_system(5, 3, 4)
    dt = torch.tensor(0.02, dtype=torch.float64)
    got = aits.leapfrog_step(s["pos"], s["vel"], s["mass"], dt)
    want = aits.leapfrog_step(s["pos"], s["vel"], s["mass"], dt.expand(4).contiguous())
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def test_batch_equals_loop_over_systems():
    s = make_system(9, 3, 5)
    acc = aits.accelerations(s["pos"], s["mass"], 0.05)
    energy = aits.potential_energy(s["pos"], s["mass"], 0.05)
    step = aits.leapfrog_step(s["pos"], s["vel"], s["mass"], s["dt"], 0.05)
    for b in range(5):
        assert torch.equal(acc[b], aits.accelerations(s["pos"][b], s["mass"][b], 0.05))
        assert torch.equal(energy[b], aits.potential_energy(s["pos"][b], s["mass"][b], 0.05))
        single = aits.leapfrog_step(s["pos"][b], s["vel"][b], s["mass"][b], s["dt"][b], 0.05)
        for whole, one in zip(step, single):
            assert torch.equal(whole[b], one)


def test_acc_argument_saves_a_force_evaluation_without_changing_the_result():
    s = make_system(6, 2, 3)
    acc = aits.accelerations(s["pos"], s["mass"])
    with_acc = aits.leapfrog_step(s["pos"], s["vel"], s["mass"], s["dt"], acc=acc)
    without = aits.leapfrog_step(s["pos"], s["vel"], s["mass"], s["dt"])
    for a, b in zip(with_acc, without):
        assert torch.equal(a, b)
    # acc1 is the acceleration at pos1, ready for the next step
    assert torch.equal(with_acc[2], aits.accelerations(with_acc[0], s["mass"]))


def test_non_contiguous_inputs_give_contiguous_results():
    s = make_system(8, 3, 3)
    pos_t = s["pos"].transpose(1, 2).contiguous().transpose(1, 2)  # same values, strided
    vel_t = s["vel"][:, :, [0, 1, 2]].flip(1).flip(1)
    mass_t = torch.stack([s["mass"], s["mass"]], -1)[..., 0]
    assert not pos_t.is_contiguous() and not mass_t.is_contiguous()
    assert torch.equal(aits.accelerations(pos_t, mass_t), aits.accelerations(s["pos"], s["mass"]))
    assert torch.equal(
        aits.potential_energy(pos_t, mass_t), aits.potential_energy(s["pos"], s["mass"])
    )
    for a, b in zip(
        aits.leapfrog_step(pos_t, vel_t, mass_t, s["dt"]),
        aits.leapfrog_step(s["pos"], s["vel"], s["mass"], s["dt"]),
    ):
        assert torch.equal(a, b)


@pytest.mark.parametrize("batch,n", [(0, 5), (3, 0), (0, 0)])
def test_zero_size_inputs(batch, n):
    pos = torch.zeros(batch, n, 3, dtype=torch.float64)
    mass = torch.zeros(batch, n, dtype=torch.float64)
    dt = torch.tensor(0.1, dtype=torch.float64)
    assert aits.accelerations(pos, mass).shape == (batch, n, 3)
    energy = aits.potential_energy(pos, mass)
    assert energy.shape == (batch,) and torch.all(energy == 0)
    out = aits.leapfrog_step(pos, pos, mass, dt)
    assert all(t.shape == (batch, n, 3) for t in out)


def test_single_body_feels_no_force():
    pos = torch.tensor([[0.3, -1.0, 2.0]], dtype=torch.float64)
    mass = torch.tensor([5.0], dtype=torch.float64)
    assert torch.equal(aits.accelerations(pos, mass), torch.zeros_like(pos))
    assert aits.potential_energy(pos, mass).item() == 0.0


def test_two_bodies_by_hand():
    pos = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    mass = torch.tensor([2.0, 3.0], dtype=torch.float64)
    acc = aits.accelerations(pos, mass, G=2.0)
    # |r| = 5: a_0 = G m_1 r / 125, a_1 = -G m_0 r / 125
    r = torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert torch.allclose(acc[0], 2.0 * 3.0 * r / 125, rtol=1e-15, atol=0)
    assert torch.allclose(acc[1], -2.0 * 2.0 * r / 125, rtol=1e-15, atol=0)
    energy = aits.potential_energy(pos, mass, softening=0.0, G=2.0)
    assert energy.item() == pytest.approx(-2.0 * 6.0 / 5.0, rel=1e-15)
    soft = aits.potential_energy(pos, mass, softening=12.0, G=1.0)  # sqrt(25 + 144) = 13
    assert soft.item() == pytest.approx(-6.0 / 13.0, rel=1e-15)


def test_coincident_bodies_without_softening_are_non_finite_not_a_crash():
    """Documented behaviour: NaN accelerations and -inf potential; the gate rejects them."""
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    mass = torch.ones(3, dtype=torch.float64)
    acc = aits.accelerations(pos, mass)
    assert torch.isnan(acc[:2]).any()
    assert torch.isfinite(acc[2]).all()  # the distinct body is unaffected
    assert aits.potential_energy(pos, mass).item() == float("-inf")
    pos1, vel1, acc1 = aits.leapfrog_step(
        pos, torch.zeros_like(pos), mass, torch.tensor(0.1, dtype=torch.float64)
    )
    assert not torch.isfinite(vel1).all()
    # softening removes the singularity
    assert torch.isfinite(aits.accelerations(pos, mass, softening=0.1)).all()


def test_potential_energy_is_deterministic_across_thread_counts():
    s = make_system(301, 3, 2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = aits.potential_energy(s["pos"], s["mass"])
        torch.set_num_threads(max(2, threads))
        many = aits.potential_energy(s["pos"], s["mass"])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("n,batch", SHAPES)
@pytest.mark.parametrize("softening", [0.0, 0.3])
def test_pair_statistics_match_brute_force(dtype, dim, n, batch, softening):
    s = make_system(n, dim, batch, dtype)
    got = aits.ops.pair_statistics(s["pos"], s["mass"], softening, G=2.0)
    pos = s["pos"] if batch else s["pos"].unsqueeze(0)
    mass = s["mass"] if batch else s["mass"].unsqueeze(0)
    off = ~torch.eye(n, dtype=torch.bool)
    r = ((pos.unsqueeze(-2) - pos.unsqueeze(-3)).norm(dim=-1)[:, off] ** 2 + softening**2).sqrt()
    tff = (r**3 / (2.0 * (mass.unsqueeze(-1) + mass.unsqueeze(-2))[:, off])).sqrt()
    if n > 1:
        want = torch.stack([r.amin(-1), r.mean(-1), r.amax(-1), tff.amin(-1)], -1)
    else:
        want = torch.tensor([[0.0, 0.0, 0.0, float("inf")]], dtype=dtype).expand(pos.shape[0], 4)
    want = want if batch else want.squeeze(0)
    assert got.shape == want.shape
    finite = torch.isfinite(want)
    assert torch.equal(finite, torch.isfinite(got))
    assert_close_rel(got[finite], want[finite], RTOL[dtype])


def test_pair_statistics_without_freefall_and_opcheck():
    s = make_system(6, 3, 2)
    stats = aits.ops.pair_statistics(s["pos"], s["mass"], freefall=False)
    assert torch.isnan(stats[:, 3]).all()
    assert torch.equal(stats[:, :3], aits.ops.pair_statistics(s["pos"], s["mass"])[:, :3])
    torch.library.opcheck(torch.ops.aits.pair_statistics, (s["pos"], s["mass"], 0.1, 1.0, True))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("n,batch", SHAPES)
@pytest.mark.parametrize("softening", [0.0, 0.3])
def test_leapfrog_step_with_statistics_fuses_the_end_state_statistics(dtype, dim, n, batch, softening):
    s = make_system(n, dim, batch, dtype)
    pos1, vel1, acc1, stats = aits.ops.leapfrog_step_with_statistics(
        s["pos"], s["vel"], s["mass"], s["dt"], softening, 1.5
    )
    plain = aits.leapfrog_step(s["pos"], s["vel"], s["mass"], s["dt"], softening, 1.5)
    for fused, alone in zip((pos1, vel1, acc1), plain):
        assert_close_rel(fused, alone, RTOL[dtype])
    want = aits.ops.pair_statistics(pos1, s["mass"], softening, 1.5)
    assert stats.shape == want.shape
    finite = torch.isfinite(want)
    assert torch.equal(finite, torch.isfinite(stats))
    assert_close_rel(stats[finite], want[finite], 4 * RTOL[dtype])


def test_statistics_output_is_not_differentiable_and_passes_opcheck():
    s = make_system(5, 3, 2, requires_grad=True)
    pos1, _, _, stats = aits.ops.leapfrog_step_with_statistics(s["pos"], s["vel"], s["mass"], s["dt"])
    assert pos1.requires_grad and not stats.requires_grad
    args = (s["pos"], s["vel"], s["mass"], s["dt"], 0.1, 1.0, None, True)
    torch.library.opcheck(torch.ops.aits.leapfrog_step, args)


@pytest.mark.parametrize("length,mass_scale", [(1e7, 1.0), (1.0, 1e25), (1.0, 1e-22)])
def test_pair_statistics_free_fall_stays_finite_in_float32(length, mass_scale):
    """(m_i + m_j) / s^3, as in the force: no s^6 or m^2 that overflows float32."""
    s = make_system(6, 3, 2, torch.float64)
    pos, mass = s["pos"] * length, s["mass"] * mass_scale
    want = aits.ops.pair_statistics(pos, mass)[:, 3]
    got = aits.ops.pair_statistics(pos.float(), mass.float())[:, 3]
    fused = aits.ops.leapfrog_step_with_statistics(pos.float(), s["vel"].float(), mass.float(), 1e-30)[3][:, 3]
    assert torch.isfinite(want).all() and torch.isfinite(got).all() and torch.isfinite(fused).all()
    assert_close_rel(got.double(), want, 1e-5)
    assert_close_rel(fused.double(), want, 1e-5)
