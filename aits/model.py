"""The time-step network: features of a state -> a positive step ``dt`` per system.

Three output parameterisations (``output=``):

* ``"direct"``: ``dt = dt_scale * softplus(z)``; the network predicts the step in
  the units of the training system.
* ``"dynamical"``: ``dt = dt_scale * softplus(z) * t_dyn(state)`` with
  ``t_dyn`` the minimum pairwise free-fall time
  (:func:`aits.features.min_freefall_time`). The network predicts a multiple of a
  dynamical time, so with unit-free features (``FeatureSpec(normalize="state")``)
  a model trained at one scale gives the same accuracy at any other: lengths
  scaled by ``l`` and speeds by ``l^-1/2`` scale ``dt`` by exactly ``l^3/2``.
* ``"aarseth"``: ``dt = dt_scale * softplus(z) * tau_A(state)`` with ``tau_A``
  Aarseth's time scale (:func:`aits.features.aarseth_time` at ``eta = 1``). The
  network predicts a correction to Aarseth's criterion: with ``dt_init`` it starts
  as exactly ``AarsethPolicy(eta=dt_init**2)``, so training starts from the best
  classical criterion, scale-free like ``dynamical``.

An ensemble (``members=K``, built from K trained networks by :meth:`TimeStepNet.average`)
holds K networks of one configuration on the same inputs and predicts the geometric
mean of their steps: networks trained with different seeds differ by up to 40 % in
force evaluations on one system, and their mean varies far less than one of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from aits.features import (ENCOUNTER_KINDS, WINDOW_KINDS, FeatureSpec, aarseth_time,
                           state_pair_stats)
from aits.state import SystemState

__all__ = ["OUTPUTS", "FourierFeatures", "StackedLinear", "TimeStepNet"]

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU}
OUTPUTS = ("direct", "dynamical", "aarseth")
#: outputs that multiply the network's factor by a time scale of the state
SCALED = ("dynamical", "aarseth")


class FourierFeatures(nn.Module):
    """Gaussian Fourier-feature embedding (Tancik et al. 2020):
    ``x (..., F) -> [sin(2 pi x B), cos(2 pi x B)] (..., 2 m)`` with a fixed random
    ``B (F, m) ~ N(0, sigma^2)`` (a buffer, saved with the model, not trained). With
    ``members = K > 1``, ``B (K, F, m)`` (member ``k`` seeded ``seed + k``) maps
    ``x (K, rows, F)`` member by member."""

    def __init__(self, in_features: int, n_frequencies: int, sigma: float = 1.0,
                 seed: int = 0, members: int = 1) -> None:
        super().__init__()
        B = [sigma * torch.randn(in_features, n_frequencies,
                                 generator=torch.Generator().manual_seed(seed + k))
             for k in range(members)]
        self.register_buffer("B", B[0] if members == 1 else torch.stack(B))

    def forward(self, x: Tensor) -> Tensor:
        proj = 2 * math.pi * (x @ self.B.to(x.dtype))
        return torch.cat([proj.sin(), proj.cos()], -1)


class StackedLinear(nn.Module):
    """``K`` independent linear layers in one, ``(K, rows, in) -> (K, rows, out)``:
    ``weight (K, out, in)`` and ``bias (K, out)``, each member initialised as
    :class:`torch.nn.Linear` is; one batched matrix product for all of them."""

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        layers = [nn.Linear(in_features, out_features) for _ in range(members)]
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))

    def forward(self, h: Tensor) -> Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), h, self.weight.transpose(1, 2))


class TimeStepNet(nn.Module):
    """MLP predicting ``dt`` from state features.

    Args:
        features: a :class:`~aits.features.FeatureSpec` (or a dict for it, or an
            analytic kind name such as ``"basic"``); sets the input size.
        hidden: hidden layer sizes (default ``[200, 1000, 1000, 200]``).
        activation: ``tanh`` (default), ``relu``, ``gelu``, ``silu`` or ``elu``.
        dropout: dropout after every hidden activation (default 0.2; off in eval()).
        fourier_features: number of Gaussian Fourier frequencies ``m`` (0 = off); the
            MLP then sees ``2 m`` inputs instead of the raw features.
        fourier_sigma: standard deviation of the Fourier frequencies.
        output: ``"direct"``, ``"dynamical"`` or ``"aarseth"`` (module docstring).
        dt_scale: multiplies the softplus output (a unit for ``dt``).
        dt_init: if given, the last layer starts with zero weights and a bias such
            that the initial prediction is ``dt_init`` (times the time scale for
            ``dynamical`` and ``aarseth``).
        seed: seeds the Fourier matrix (member ``k`` of an ensemble: ``seed + k``).
        members: ``K > 1``: K networks of this configuration on the same inputs, ``dt``
            the geometric mean of theirs (:meth:`average` builds one from trained
            networks).
    """

    def __init__(
        self,
        features: FeatureSpec | dict | str = "basic",
        *,
        hidden: Sequence[int] = (200, 1000, 1000, 200),
        activation: str = "tanh",
        dropout: float = 0.2,
        fourier_features: int = 0,
        fourier_sigma: float = 1.0,
        output: str = "direct",
        dt_scale: float = 1.0,
        dt_init: float | None = None,
        seed: int = 0,
        members: int = 1,
    ) -> None:
        super().__init__()
        if isinstance(features, str):
            features = FeatureSpec(kind=features)
        elif isinstance(features, dict):
            features = FeatureSpec.from_dict(features)
        if not isinstance(features, FeatureSpec):
            raise TypeError(f"features must be a FeatureSpec, dict or kind name, got {features!r}")
        hidden = [int(h) for h in hidden]
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden sizes must be >= 1, got {hidden}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if not isinstance(fourier_features, int) or fourier_features < 0:
            raise ValueError(f"fourier_features must be an int >= 0, got {fourier_features!r}")
        if not float(fourier_sigma) > 0:
            raise ValueError(f"fourier_sigma must be > 0, got {fourier_sigma!r}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if not (float(dt_scale) > 0 and math.isfinite(float(dt_scale))):
            raise ValueError(f"dt_scale must be finite and > 0, got {dt_scale!r}")
        if dt_init is not None and not (float(dt_init) > 0 and math.isfinite(float(dt_init))):
            raise ValueError(f"dt_init must be None or finite and > 0, got {dt_init!r}")
        if not isinstance(members, int) or isinstance(members, bool) or members < 1:
            raise ValueError(f"members must be an int >= 1, got {members!r}")
        self.spec = features
        self.in_features = features.dim
        self.output = output
        self.dt_scale = float(dt_scale)
        self._config = dict(
            features=features.to_dict(), hidden=hidden, activation=activation,
            dropout=float(dropout), fourier_features=fourier_features,
            fourier_sigma=float(fourier_sigma), output=output, dt_scale=float(dt_scale),
            dt_init=None if dt_init is None else float(dt_init), seed=seed,
        )
        if members > 1:  # one-member networks keep their checkpoints' layout
            self._config["members"] = members
        self.members = members
        self.embed, self.body, self.head = self._layers(
            hidden, activation, float(dropout), fourier_features, float(fourier_sigma), dt_init,
            seed)

    def _layers(self, hidden: list[int], activation: str, dropout: float, fourier_features: int,
                fourier_sigma: float, dt_init: float | None, seed: int
                ) -> tuple[nn.Module, nn.Sequential, nn.Module]:
        """The embedding, hidden layers and output layer: plain for one member, each
        layer holding every member's weights (:class:`StackedLinear`) for more."""
        K = self.members

        def linear(fan_in: int, fan_out: int) -> nn.Module:
            return nn.Linear(fan_in, fan_out) if K == 1 else StackedLinear(K, fan_in, fan_out)

        embed = (FourierFeatures(self.in_features, fourier_features, fourier_sigma, seed, K)
                 if fourier_features else nn.Identity())
        width = 2 * fourier_features if fourier_features else self.in_features
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [linear(width, h), _ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        head = linear(width, 1)
        if dt_init is not None:
            nn.init.zeros_(head.weight)
            y = float(dt_init) / self.dt_scale
            with torch.no_grad():  # inverse softplus
                head.bias.fill_(y + math.log(-math.expm1(-y)))
        return embed, nn.Sequential(*layers), head

    @classmethod
    def average(cls, nets: Sequence[TimeStepNet]) -> TimeStepNet:
        """The ensemble of ``nets`` (one-member networks of one configuration but for
        their seeds, e.g. trained with different seeds): ``members=len(nets)``, its
        ``dt`` the geometric mean of theirs, in the dtype and on the device of the first.

        Raises:
            ValueError: no nets, an ensemble among them, or configurations that differ.
        """
        if not nets:
            raise ValueError("TimeStepNet.average needs at least one network")
        configs = [net.config() for net in nets]
        if any(net.members != 1 for net in nets):
            raise ValueError("TimeStepNet.average: average one-member networks, not ensembles")
        first = {k: v for k, v in configs[0].items() if k != "seed"}
        for k, c in enumerate(configs[1:], 1):
            other = {key: v for key, v in c.items() if key != "seed"}
            if other != first:
                diff = sorted(key for key in first.keys() | other.keys()
                              if first.get(key) != other.get(key))
                raise ValueError(f"TimeStepNet.average: network {k} differs from network 0 in "
                                 f"{', '.join(diff)}; an ensemble needs one configuration")
        if len(nets) == 1:
            return nets[0]
        p = next(nets[0].parameters())
        out = cls(**configs[0], members=len(nets)).to(dtype=p.dtype, device=p.device)
        with torch.no_grad():  # member k's tensors into slot k of every stacked one
            stacked = out.state_dict()
            for k, net in enumerate(nets):
                for name, value in net.state_dict().items():
                    stacked[name][k] = value
        return out.eval()

    def config(self) -> dict:
        """Constructor arguments (JSON-friendly): ``TimeStepNet(**net.config())`` rebuilds it."""
        return dict(self._config, hidden=list(self._config["hidden"]))

    def forward(self, x: Tensor, t_dyn: Tensor | None = None) -> Tensor:
        """``x (..., in_features)`` -> ``dt (...)``, every entry > 0.

        ``t_dyn (...)``, the time scale of the state, is required for
        ``output="dynamical"`` (the minimum free-fall time) and ``"aarseth"`` (Aarseth's
        time scale) and ignored otherwise.
        """
        if x.shape[-1] != self.in_features:
            raise ValueError(f"expected {self.in_features} input features, got {x.shape[-1]}")
        x = x.to(self.head.weight.dtype)
        if self.members == 1:
            dt = self.dt_scale * F.softplus(self.head(self.body(self.embed(x))).squeeze(-1))
        else:  # every member on the same rows, (K, rows, width); the geometric mean of dt
            rows = x.reshape(1, -1, x.shape[-1]).expand(self.members, -1, -1)
            z = self.head(self.body(self.embed(rows))).squeeze(-1)
            dt = self.dt_scale * F.softplus(z).log().mean(0).exp().reshape(x.shape[:-1])
        if self.output in SCALED:
            if t_dyn is None:
                raise ValueError(f"output={self.output!r} needs t_dyn (the state's time scale: "
                                 "TimeStepNet.inputs(state) gives it)")
            dt = dt * t_dyn.to(dt.dtype)
        return dt

    @property
    def uses_pair_statistics(self) -> bool:
        """Whether :meth:`inputs` reads the state's pair statistics: every kind but the
        encounter ones (``encounter-history`` included) under the ``"aarseth"`` output
        without history features."""
        return not (self._encounter_inputs() or self._window_inputs())

    def _encounter_inputs(self) -> bool:
        return (self.output == "aarseth" and self.spec.kind in ENCOUNTER_KINDS
                and not self.spec.history_dim)

    def _window_inputs(self) -> bool:
        return self.output == "aarseth" and self.spec.kind in WINDOW_KINDS

    def inputs(self, state: SystemState, history=None) -> tuple[Tensor, Tensor | None]:
        """The network's inputs for ``state``: features ``batch_shape + (in_features,)``
        and the time scale ``batch_shape``: the minimum pairwise free-fall time for
        ``output="dynamical"`` (one pass over the body pairs serves both), Aarseth's
        time scale for ``"aarseth"``, else ``None``."""
        if self._encounter_inputs():
            # the encounter features hold Aarseth's time: one set of derivative passes
            from aits.encounter import kind_features  # encounter imports policies

            feats, times = kind_features(state, self.spec.kind)
            return feats, times.aarseth_min
        if self._window_inputs():
            # Aarseth's time from the same finite-difference derivatives as the features
            from aits.encounter_history import history_encounter_features

            return history_encounter_features(state, self.spec.window(history))
        pairs = state_pair_stats(state, freefall=self.output == "dynamical")
        feats = self.spec(state, history, pairs)
        if self.output == "aarseth":
            return feats, aarseth_time(state)
        return feats, pairs.min_freefall

    def predict_dt(self, state: SystemState, history=None, *, grad: bool | None = None) -> Tensor:
        """``dt`` for ``state`` (shape ``batch_shape``, state's dtype), computing the
        features (and ``t_dyn``) from ``state`` and ``history``.

        Args:
            grad: record the autograd graph (when gradients are enabled at all).
                Default: in train mode only, so that a model in eval mode (inference:
                the policies, the rollout check) returns a ``dt`` without graph that
                does not require grad. Training passes ``True``, whatever the mode.
        """
        record = torch.is_grad_enabled() and (self.training if grad is None else grad)
        with torch.set_grad_enabled(record):
            feats, t_dyn = self.inputs(state, history)
            return self(feats, t_dyn).to(state.dtype)
