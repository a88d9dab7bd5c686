"""TimeStepNet: shapes, positivity, options, and direct vs dynamical-time output."""

import math

import pytest
import torch

from aits.features import FeatureSpec, min_freefall_time
from aits.gate import step_energy_error
from aits.history import HistoryBuffer
from aits.ics import kepler_batch, kepler_orbit
from aits.model import FourierFeatures, TimeStepNet
from aits.state import SystemState, step

f64 = torch.float64


def test_default_architecture_and_positive_output():
    net = TimeStepNet("basic")
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [200, 1000, 1000, 200, 1]
    assert linears[0].in_features == 11
    assert any(isinstance(m, torch.nn.Tanh) for m in net.modules())
    drops = [m for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(drops) == 4 and drops[0].p == 0.2
    x = torch.randn(7, 11) * 100  # large inputs still give dt > 0
    dt = net(x)
    assert dt.shape == (7,) and (dt > 0).all()
    assert net(torch.randn(11)).shape == ()


def test_predict_dt_per_system_with_history():
    spec = FeatureSpec("rich", "delta_mag", 2)
    net = TimeStepNet(spec, hidden=[16, 16], dropout=0.0).double()
    assert net.in_features == 23 + 20
    s = kepler_batch(5, seed=1)
    h = HistoryBuffer(2)
    dt = net.predict_dt(s, h)
    assert dt.shape == (5,) and dt.dtype == f64 and (dt > 0).all()
    h.push(s)
    assert net.predict_dt(step(s, 0.01), h).shape == (5,)
    one = net.predict_dt(kepler_orbit(0.3), HistoryBuffer(2))
    assert one.shape == ()


def test_dropout_train_vs_eval():
    net = TimeStepNet("basic", hidden=[32, 32], dropout=0.5)
    x = torch.randn(4, 11)
    torch.manual_seed(0)
    a, b = net(x), net(x)
    assert not torch.equal(a, b)
    net.eval()
    assert torch.equal(net(x), net(x))


def test_fourier_features_and_dt_init():
    net = TimeStepNet("basic", hidden=[8], fourier_features=16, fourier_sigma=2.0,
                      dt_init=0.003, dt_scale=0.1)
    assert isinstance(net.embed, FourierFeatures) and net.embed.B.shape == (11, 16)
    assert net.body[0].in_features == 32
    emb = net.embed(torch.zeros(3, 11))
    torch.testing.assert_close(emb, torch.cat([torch.zeros(3, 16), torch.ones(3, 16)], -1))
    torch.testing.assert_close(net(torch.randn(5, 11)), torch.full((5,), 0.003))
    # same seed, same frequencies: the config rebuilds an equivalent model
    twin = TimeStepNet(**net.config())
    twin.load_state_dict(net.state_dict())
    x = torch.randn(3, 11)
    torch.testing.assert_close(twin(x), net(x))
    assert twin.config() == net.config()


def test_gradients_reach_parameters_through_step_and_gate():
    net = TimeStepNet("basic", hidden=[8], dropout=0.0, dt_init=0.01).double()
    s = kepler_batch(3, seed=2)
    rel = step_energy_error(s, step(s, net.predict_dt(s)))
    rel.sum().backward()
    assert net.head.bias.grad is not None and net.head.bias.grad.item() > 0


def test_inference_builds_no_graph_and_training_keeps_its_gradients():
    from aits.gate import EnergyGate
    from aits.policies import ModelPolicy
    from aits.training import replay_errors

    net = TimeStepNet("basic", hidden=[8], dropout=0.0, dt_init=0.01).double()
    s = kepler_batch(3, seed=2)
    assert net.predict_dt(s).requires_grad  # train mode: a graph for the optimiser
    net.eval()
    dt = net.predict_dt(s)
    assert not dt.requires_grad and dt.grad_fn is None
    assert not ModelPolicy(net)(s).requires_grad
    # training's own use asks for the graph whatever the mode (Part 2 in eval mode)
    dt, rel = replay_errors(net, s, None, EnergyGate())
    assert dt.requires_grad
    rel.sum().backward()
    assert net.head.bias.grad is not None
    with torch.no_grad():  # and an explicit no_grad still wins
        assert not net.predict_dt(s, grad=True).requires_grad


def test_dynamical_output_transfers_across_scales_direct_does_not():
    spec = FeatureSpec("basic", normalize="state")
    torch.manual_seed(0)
    kw = dict(hidden=[16, 16], dropout=0.0, dt_init=0.02)
    direct = TimeStepNet(spec, output="direct", **kw).double()
    dyn = TimeStepNet(spec, output="dynamical", **kw).double()
    dyn.load_state_dict(direct.state_dict())  # identical networks, different outputs
    s = kepler_batch(4, (0.0, 0.7), (1.0, 1.0), seed=3)
    lam = 100.0  # lengths x100, speeds x 1/10: every time scales by 1000
    big = SystemState(s.pos * lam, s.vel / math.sqrt(lam), s.mass)
    for net in (direct, dyn):
        net.eval()
    # the features are unit-free, so the raw network output is the same at both scales
    torch.testing.assert_close(direct.predict_dt(s), direct.predict_dt(big))
    ratio = dyn.predict_dt(big) / dyn.predict_dt(s)
    torch.testing.assert_close(ratio, torch.full((4,), lam**1.5, dtype=f64))
    torch.testing.assert_close(
        dyn.predict_dt(s), direct.predict_dt(s) * min_freefall_time(s)
    )

    def err(net, state):
        return step_energy_error(state, step(state, net.predict_dt(state)))

    torch.testing.assert_close(err(dyn, big), err(dyn, s))  # same accuracy at any scale
    # the direct step is 1000 x too small for the big system: far more accurate than needed
    assert (err(direct, big) < 1e-3 * err(direct, s)).all()
    with pytest.raises(ValueError, match="needs t_dyn"):
        dyn(torch.randn(11, dtype=f64))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"hidden": [0]}, ValueError, "hidden sizes must be >= 1"),
        ({"activation": "sigmoid"}, ValueError, "activation must be one of"),
        ({"dropout": 1.0}, ValueError, "dropout must be in"),
        ({"fourier_features": -1}, ValueError, "fourier_features must be an int"),
        ({"fourier_sigma": 0.0}, ValueError, "fourier_sigma must be > 0"),
        ({"output": "log"}, ValueError, "output must be one of"),
        ({"dt_scale": 0.0}, ValueError, "dt_scale must be finite and > 0"),
        ({"dt_init": -1.0}, ValueError, "dt_init must be None or finite and > 0"),
        ({"features": 3}, TypeError, "features must be a FeatureSpec"),
    ],
)
def test_invalid_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        TimeStepNet(**kwargs)


def test_wrong_input_width():
    net = TimeStepNet(FeatureSpec("rich"), hidden=[4])
    with pytest.raises(ValueError, match="expected 23 input features, got 11"):
        net(torch.randn(2, 11))
    assert TimeStepNet({"kind": "basic", "history": "delta_mag", "history_len": 4},
                       hidden=[4]).in_features == 51


def test_aarseth_output_starts_as_aarseths_criterion():
    """output='aarseth' with dt_init = sqrt(eta): the untrained network is
    AarsethPolicy(eta) on any system, and scale-free like the criterion."""
    from aits.policies import AarsethPolicy, ModelPolicy
    from aits.scenarios import make_scenario

    net = TimeStepNet("basic", hidden=[8], dropout=0.0, output="aarseth", dt_init=0.1).double()
    for name in ("binary-e0.9", "figure8", "plummer64", "triple"):
        state = make_scenario(name)
        torch.testing.assert_close(ModelPolicy(net)(state), AarsethPolicy(0.01)(state),
                                   rtol=1e-6, atol=0)
    feats, tau = net.inputs(make_scenario("binary-e0.5"))
    with pytest.raises(ValueError, match="needs t_dyn"):
        net(feats)
    assert tau.shape == () and float(tau) > 0


@pytest.mark.parametrize("scenario", ["binary-e0.9", "plummer64", "triple"])
def test_aarseth_head_on_encounter_features_reuses_their_derivatives(scenario):
    from aits.features import aarseth_time
    from aits.scenarios import make_scenario

    state = make_scenario(scenario).as_batch()
    net = TimeStepNet(FeatureSpec(kind="encounter", normalize="state"), hidden=[8],
                      output="aarseth", dt_init=0.1)
    feats, tau = net.inputs(state)
    assert torch.equal(feats, net.spec(state))
    torch.testing.assert_close(tau, aarseth_time(state), rtol=1e-15, atol=0)


def _trained_like(seed: int, fourier: int = 0) -> TimeStepNet:
    """A small aarseth-head network with random (seeded) weights, as if trained."""
    torch.manual_seed(seed)
    net = TimeStepNet("basic", hidden=[8, 8], dropout=0.0, output="aarseth", dt_init=0.1,
                      seed=seed, fourier_features=fourier).double()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net.eval()


@pytest.mark.parametrize("fourier", [0, 4])
def test_average_is_the_geometric_mean_and_survives_a_checkpoint(tmp_path, fourier):
    from aits.checkpoint import load_model, save_checkpoint
    from aits.policies import ModelPolicy

    nets = [_trained_like(k, fourier) for k in range(3)]
    ens = TimeStepNet.average(nets)
    assert ens.members == 3 and ens.config()["members"] == 3 and not ens.training
    s = kepler_batch(6, seed=2)
    dts = torch.stack([n.predict_dt(s) for n in nets])
    assert not torch.allclose(dts[0], dts[1])  # the members differ
    want = dts.log().mean(0).exp()
    torch.testing.assert_close(ens.predict_dt(s), want, rtol=1e-14, atol=0)
    path = save_checkpoint(tmp_path / "ens.pt", {"model_config": ens.config(),
                                                 "model": ens.state_dict()})
    back = load_model(path)
    assert back.members == 3
    torch.testing.assert_close(ModelPolicy(back)(s), want, rtol=1e-14, atol=0)
    assert TimeStepNet.average(nets[:1]) is nets[0]
    # one-member networks keep the layout (and config) of the checkpoints before ensembles
    assert "members" not in nets[0].config() and "body.0.weight" in nets[0].state_dict()


def test_average_refuses_what_is_not_one_configuration():
    a = _trained_like(0)
    b = TimeStepNet("basic", hidden=[8, 4], dropout=0.0, output="aarseth", dt_init=0.1)
    with pytest.raises(ValueError, match="differs from network 0 in hidden"):
        TimeStepNet.average([a, b.double()])
    with pytest.raises(ValueError, match="at least one network"):
        TimeStepNet.average([])
    with pytest.raises(ValueError, match="not ensembles"):
        TimeStepNet.average([TimeStepNet.average([a, _trained_like(1)]), a])
    with pytest.raises(ValueError, match="members must be an int >= 1"):
        TimeStepNet("basic", members=0)
