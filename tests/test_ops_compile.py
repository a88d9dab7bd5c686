"""The ops inside torch.compile(fullgraph=True): fake kernels and autograd work."""

from __future__ import annotations

import torch
from helpers import assert_close_rel, make_system

import aits
from aits import reference as ref


def energy_error_of_a_step(pos, vel, mass, dt):
    e0 = ref.kinetic_energy(vel, mass) + aits.potential_energy(pos, mass, 0.01)
    pos1, vel1, _ = aits.leapfrog_step(pos, vel, mass, dt, 0.01)
    e1 = ref.kinetic_energy(vel1, mass) + aits.potential_energy(pos1, mass, 0.01)
    return ((e1 - e0) / e0).abs().sum()


def test_torch_compile_fullgraph_forward_and_backward():
    torch._dynamo.reset()
    compiled = torch.compile(energy_error_of_a_step, fullgraph=True, backend="aot_eager")
    s = make_system(5, 3, 2, requires_grad=True)
    got = compiled(s["pos"], s["vel"], s["mass"], s["dt"])
    (g_got,) = torch.autograd.grad(got, [s["dt"]])
    want = energy_error_of_a_step(s["pos"], s["vel"], s["mass"], s["dt"])
    (g_want,) = torch.autograd.grad(want, [s["dt"]])
    assert_close_rel(got, want, 1e-12)
    assert_close_rel(g_got, g_want, 1e-12)
