"""Every bad input gets a clear error that names the argument and the fix."""

from __future__ import annotations

import pytest
import torch

import aits
from aits.ops import aarseth_derivatives, pair_statistics

F64 = torch.float64


def system(n=4, dim=3, batch=2, dtype=F64):
    lead = () if batch is None else (batch,)
    pos = torch.randn(lead + (n, dim), dtype=dtype)
    vel = torch.randn(lead + (n, dim), dtype=dtype)
    mass = torch.rand(lead + (n,), dtype=dtype) + 0.1
    dt = torch.tensor(0.01, dtype=dtype)
    return pos, vel, mass, dt


def all_ops(pos, vel, mass, dt, softening=0.0, G=1.0, acc=None):
    """Calls each op; used where every op must refuse the same input."""
    yield lambda: aits.accelerations(pos, mass, softening, G)
    yield lambda: aits.potential_energy(pos, mass, softening, G)
    yield lambda: aits.leapfrog_step(pos, vel, mass, dt, softening, G, acc)
    yield lambda: aarseth_derivatives(pos, vel, mass, softening, G)


def expect_all(exc, match, *args, **kwargs):
    for call in all_ops(*args, **kwargs):
        with pytest.raises(exc, match=match):
            call()


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4, 3), (4, 1), (4, 4)])
def test_wrong_rank_or_dimension(shape):
    pos = torch.zeros(shape, dtype=F64)
    mass = torch.ones(shape[:-1], dtype=F64)
    expect_all(ValueError, r"pos must have shape \(N, D\) or \(B, N, D\) with D = 2 or 3", pos, pos, mass, torch.tensor(0.1, dtype=F64))


def test_mass_shape_mismatch():
    pos, vel, mass, dt = system()
    expect_all(ValueError, r"mass must have shape \(2, 4\) to match pos of shape \(2, 4, 3\), got \(2, 5\)", pos, vel, torch.ones(2, 5, dtype=F64), dt)
    expect_all(ValueError, r"mass must have shape", pos, vel, mass[0], dt)


def test_mixed_dtypes():
    pos, vel, mass, dt = system()
    expect_all(TypeError, r"mass has dtype Float but pos has dtype Double; convert it with .to\(pos.dtype\)", pos, vel, mass.float(), dt)
    for call in (lambda: aits.leapfrog_step(pos, vel.float(), mass, dt),
                 lambda: aarseth_derivatives(pos, vel.float(), mass)):
        with pytest.raises(TypeError, match="vel has dtype Float"):
            call()
    with pytest.raises(TypeError, match="dt has dtype Float"):
        aits.leapfrog_step(pos, vel, mass, dt.float())


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.float16, torch.bfloat16, torch.complex128])
def test_unsupported_dtypes(dtype):
    pos = torch.zeros(3, 2).to(dtype)
    mass = torch.ones(3).to(dtype)
    expect_all(TypeError, r"pos must be float32 or float64", pos, pos, mass, torch.tensor(1.0).to(dtype))


def test_mixed_devices():
    pos, vel, mass, dt = system()
    meta_mass = mass.to("meta")
    with pytest.raises(ValueError, match=r"mass is on meta but pos is on cpu; move it with .to\(pos.device\)"):
        torch.ops.aits.accelerations.default.redispatch(
            torch._C.DispatchKeySet(torch._C.DispatchKey.CPU), pos, meta_mass, 0.0, 1.0
        )
    with pytest.raises(ValueError, match=r"^aits\.aarseth_derivatives: vel is on meta but pos is on cpu"):
        torch.ops.aits.aarseth_derivatives.default.redispatch(
            torch._C.DispatchKeySet(torch._C.DispatchKey.CPU), pos, vel.to("meta"), mass, 0.0, 1.0
        )


def test_negative_mass():
    pos, vel, mass, dt = system()
    mass[1, 2] = -1.0
    expect_all(ValueError, r"mass contains negative values; every entry must be >= 0", pos, vel, mass, dt)


@pytest.mark.parametrize("softening", [-0.1, float("nan"), float("inf")])
def test_bad_softening(softening):
    pos, vel, mass, dt = system()
    expect_all(ValueError, r"softening must be a finite number >= 0", pos, vel, mass, dt, softening=softening)


@pytest.mark.parametrize("G", [0.0, -1.0, float("nan")])
def test_bad_gravitational_constant(G):
    pos, vel, mass, dt = system()
    expect_all(ValueError, r"G must be a finite number > 0", pos, vel, mass, dt, G=G)


@pytest.mark.parametrize("value", [0.0, -0.0, float("nan"), float("inf")])
def test_zero_or_non_finite_dt(value):
    pos, vel, mass, _ = system()
    dt = torch.tensor([0.1, value], dtype=F64)
    match = r"dt contains (zeros|NaN or infinite values)"
    with pytest.raises(ValueError, match=match):
        aits.leapfrog_step(pos, vel, mass, dt)


@pytest.mark.parametrize("shape", [(3,), (2, 1), (1,)])
def test_dt_shape(shape):
    pos, vel, mass, _ = system()
    with pytest.raises(ValueError, match=r"dt must be a 0-d tensor or have shape \(B,\) = \(2,\)"):
        aits.leapfrog_step(pos, vel, mass, torch.full(shape, 0.1, dtype=F64))


def test_dt_must_be_0d_for_one_system():
    pos, vel, mass, _ = system(batch=None)
    with pytest.raises(ValueError, match=r"dt must be a 0-d tensor, got shape \(1,\)"):
        aits.leapfrog_step(pos, vel, mass, torch.tensor([0.1], dtype=F64))


def test_dt_number_is_accepted_and_other_types_are_refused():
    pos, vel, mass, dt = system()
    for a, b in zip(aits.leapfrog_step(pos, vel, mass, 0.01), aits.leapfrog_step(pos, vel, mass, dt)):
        assert torch.equal(a, b)
    with pytest.raises(TypeError, match=r"dt must be a torch.Tensor \(0-d or \(B,\)\) or a number, got list"):
        aits.leapfrog_step(pos, vel, mass, [0.1, 0.1])


@pytest.mark.parametrize("name", ["pos", "vel", "mass", "acc"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs(name, bad):
    pos, vel, mass, dt = system()
    acc = aits.accelerations(pos, mass)
    tensors = {"pos": pos, "vel": vel, "mass": mass, "acc": acc}
    tensors[name].view(-1)[3] = bad
    with pytest.raises(ValueError, match=rf"{name} contains NaN or infinite values"):
        aits.leapfrog_step(tensors["pos"], tensors["vel"], tensors["mass"], dt, acc=tensors["acc"])


@pytest.mark.parametrize("name", ["pos", "vel"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_of_aarseth_derivatives(name, bad):
    pos, vel, mass, _ = system()
    {"pos": pos, "vel": vel}[name].view(-1)[5] = bad
    with pytest.raises(ValueError, match=rf"^aits\.aarseth_derivatives: {name} contains NaN or infinite values"):
        aarseth_derivatives(pos, vel, mass)


def test_vel_and_acc_shapes():
    pos, vel, mass, dt = system()
    match = r"vel must have the same shape as pos \(2, 4, 3\), got \(2, 4, 2\)"
    with pytest.raises(ValueError, match=match):
        aits.leapfrog_step(pos, vel[..., :2], mass, dt)
    with pytest.raises(ValueError, match=match):
        aarseth_derivatives(pos, vel[..., :2], mass)
    with pytest.raises(ValueError, match=r"acc must have the same shape as pos"):
        aits.leapfrog_step(pos, vel, mass, dt, acc=vel[0])


def test_errors_name_the_op():
    pos, vel, mass, dt = system()
    with pytest.raises(ValueError, match=r"^aits\.potential_energy: "):
        aits.potential_energy(pos, -mass)


def _meta_mixes():
    pos, vel, mass, dt = system()
    M = "meta"
    yield "mass", lambda: aits.accelerations(pos, mass.to(M))
    yield "pos", lambda: aits.accelerations(pos.to(M), mass)  # message names the other one
    yield "mass", lambda: aits.potential_energy(pos, mass.to(M))
    yield "mass", lambda: pair_statistics(pos, mass.to(M))
    yield "vel", lambda: aits.leapfrog_step(pos, vel.to(M), mass, dt)
    yield "dt", lambda: aits.leapfrog_step(pos, vel, mass, dt.to(M))
    yield "acc", lambda: aits.leapfrog_step(pos, vel, mass, dt, acc=pos.to(M))
    yield "vel", lambda: aarseth_derivatives(pos, vel.to(M), mass)
    yield "mass", lambda: aarseth_derivatives(pos, vel, mass.to(M))


@pytest.mark.parametrize("case", range(9))
def test_a_mix_with_meta_is_refused(case):
    name, call = list(_meta_mixes())[case]
    pattern = ("mass is on cpu but pos is on meta" if name == "pos"
               else f"{name} is on meta but pos is on cpu")
    with pytest.raises(ValueError, match=pattern + r"; move it with .to\(pos.device\)"):
        call()


def test_all_meta_still_gives_shapes():
    pos, vel, mass, dt = (t.to("meta") for t in system())
    assert aits.accelerations(pos, mass).shape == pos.shape
    assert aits.leapfrog_step(pos, vel, mass, dt, acc=torch.empty_like(pos))[0].device.type == "meta"


def test_pair_statistics_refuses_inputs_that_require_grad():
    pos, vel, mass, dt = system()
    with pytest.raises(ValueError, match=r"pair_statistics is not differentiable.*pos.detach\(\)"):
        pair_statistics(pos.clone().requires_grad_(), mass)
    with pytest.raises(ValueError, match="not differentiable"):
        pair_statistics(pos, mass.clone().requires_grad_())
    with torch.no_grad():  # no graph wanted: fine
        assert pair_statistics(pos.clone().requires_grad_(), mass).shape == (2, 4)
