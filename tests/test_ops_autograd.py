"""Gradients of the native ops: gradcheck in float64, agreement with the
reference's autograd, opcheck of every op, and the double-backward error."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close_rel, make_system

import aits
from aits import reference as ref

OPS = torch.ops.aits
CASES = [(1, None, 3), (2, None, 2), (5, None, 3), (4, 2, 3), (3, 3, 2)]


def _gradcheck(fn, inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("n,batch,dim", CASES)
@pytest.mark.parametrize("softening", [0.0, 0.2])
def test_gradcheck_accelerations(n, batch, dim, softening):
    s = make_system(n, dim, batch, requires_grad=True)
    _gradcheck(lambda p, m: aits.accelerations(p, m, softening, 1.3), (s["pos"], s["mass"]))


@pytest.mark.parametrize("n,batch,dim", CASES)
@pytest.mark.parametrize("softening", [0.0, 0.2])
def test_gradcheck_potential_energy(n, batch, dim, softening):
    s = make_system(n, dim, batch, requires_grad=True)
    _gradcheck(lambda p, m: aits.potential_energy(p, m, softening, 0.7), (s["pos"], s["mass"]))


@pytest.mark.parametrize("n,batch,dim", CASES)
@pytest.mark.parametrize("with_acc", [False, True])
def test_gradcheck_leapfrog_step(n, batch, dim, with_acc):
    s = make_system(n, dim, batch, requires_grad=True)
    inputs = [s["pos"], s["vel"], s["mass"], s["dt"]]
    if with_acc:
        inputs.append(aits.accelerations(s["pos"].detach(), s["mass"].detach(), 0.1).requires_grad_())

    def fn(pos, vel, mass, dt, acc=None):
        return aits.leapfrog_step(pos, vel, mass, dt, 0.1, 1.0, acc)

    _gradcheck(fn, tuple(inputs))


def test_gradcheck_scalar_dt_with_a_batch():
    s = make_system(4, 3, 3, requires_grad=True)
    dt = torch.tensor(0.02, dtype=torch.float64, requires_grad=True)
    _gradcheck(lambda p, v, m, h: aits.leapfrog_step(p, v, m, h), (s["pos"], s["vel"], s["mass"], dt))


def test_energy_gradients_match_reference_autograd():
    """The energy after a step, back-propagated into every input, as training does it."""
    s = make_system(6, 3, 3, requires_grad=True)

    def energy_after_step(mod):
        pos1, vel1, _ = mod.leapfrog_step(s["pos"], s["vel"], s["mass"], s["dt"], 0.05)
        kinetic = ref.kinetic_energy(vel1, s["mass"])
        return (kinetic + mod.potential_energy(pos1, s["mass"], 0.05)).sum()

    want = torch.autograd.grad(energy_after_step(ref), list(s.values()))
    got = torch.autograd.grad(energy_after_step(aits), list(s.values()))
    for g, w in zip(got, want):
        assert_close_rel(g, w, 1e-11)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_step_gradients_match_reference_autograd(dtype):
    s = make_system(6, 2, 3, dtype=dtype, requires_grad=True)
    gen = torch.Generator().manual_seed(3)
    weights = [torch.randn(s["pos"].shape, generator=gen).to(dtype) for _ in range(3)]

    def loss(mod):
        outs = mod.leapfrog_step(s["pos"], s["vel"], s["mass"], s["dt"], 0.05)
        return sum((w * o).sum() for w, o in zip(weights, outs))

    want = torch.autograd.grad(loss(ref), list(s.values()))
    got = torch.autograd.grad(loss(aits), list(s.values()))
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    for g, w in zip(got, want):
        assert_close_rel(g, w, tol)


def test_unused_outputs_get_zero_gradients():
    s = make_system(5, 2, 2, requires_grad=True)
    pos1, _, _ = aits.leapfrog_step(s["pos"], s["vel"], s["mass"], s["dt"])
    (g_dt,) = torch.autograd.grad(pos1.sum(), [s["dt"]])
    pos1_ref, _, _ = ref.leapfrog_step(s["pos"], s["vel"], s["mass"], s["dt"])
    (w_dt,) = torch.autograd.grad(pos1_ref.sum(), [s["dt"]])
    assert_close_rel(g_dt, w_dt, 1e-12)


FORWARD_OPS = [
    ("accelerations", lambda s: (s["pos"], s["mass"], 0.1, 1.0)),
    ("potential_energy", lambda s: (s["pos"], s["mass"], 0.1, 1.0)),
    ("leapfrog_step", lambda s: (s["pos"], s["vel"], s["mass"], s["dt"], 0.1, 1.0, None)),
    (
        "leapfrog_step",
        lambda s: (
            s["pos"], s["vel"], s["mass"], s["dt"], 0.1, 1.0,
            aits.accelerations(s["pos"].detach(), s["mass"].detach(), 0.1).requires_grad_(),
        ),
    ),
]
# The backward ops are checked without gradients: differentiating them is
# refused by design (test_double_backward_raises_a_clear_error).
BACKWARD_OPS = [
    ("accelerations_backward", lambda s: (s["vel"], s["pos"], s["mass"], 0.1, 1.0)),
    ("potential_energy_backward", lambda s: (s["dt"], s["pos"], s["mass"], 0.1, 1.0)),
    (
        "leapfrog_step_backward",
        lambda s: (
            s["vel"], s["pos"], s["vel"], s["pos"], s["vel"], s["mass"], s["dt"],
            s["pos"] + 0.1, s["vel"], None, 0.1, 1.0,
        ),
    ),
]


@pytest.mark.parametrize(
    "op,make_args,requires_grad",
    [(*case, rg) for case in FORWARD_OPS for rg in (False, True)]
    + [(*case, False) for case in BACKWARD_OPS],
)
@pytest.mark.parametrize("batch", [None, 3])
def test_opcheck(op, make_args, requires_grad, batch):
    s = make_system(5, 3, batch, requires_grad=requires_grad)
    if batch is None and op == "potential_energy_backward":
        s["dt"] = torch.tensor(1.5, dtype=torch.float64)
    torch.library.opcheck(getattr(OPS, op), make_args(s))


def test_double_backward_raises_a_clear_error():
    s = make_system(4, 3, None, requires_grad=True)
    pos1, vel1, _ = aits.leapfrog_step(s["pos"], s["vel"], s["mass"], s["dt"])
    (g,) = torch.autograd.grad(vel1.pow(2).sum(), [s["dt"]], create_graph=True)
    with pytest.raises(RuntimeError, match="double backward .* not supported"):
        g.backward()
