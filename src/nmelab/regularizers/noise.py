"""Gaussian weight noise: one sample of ``∇L(θ + ε)``, ``ε ~ N(0, σ²I)`` per step (paper eq. 17)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from nmelab._tree import random_like, tree_add_scaled
from nmelab.objective import Objective
from nmelab.regularizers.base import Regularizer, check_nonnegative, register
from nmelab.regularizers.penalties import clean_value_and_grad
from nmelab.types import Batch, Key, Params, PyTree

__all__ = ["WeightNoise"]


@register("weight_noise", stochastic=True)
@dataclasses.dataclass(frozen=True)
class WeightNoise(Regularizer):
    """Weight noise (paper eq. 17): direction ``∇L(θ + ε)``, one ``ε ~ N(0, σ²I)`` per step.

    It is an unbiased one-sample estimate of ``∇ E_ε[L(θ + ε)]``, and to second order
    ``E_ε[L(θ + ε)] ≈ L(θ) + (σ²/2)·tr H`` (Taylor; the paper's eq. 17 writes ``σ²·tr H``, dropping
    the ½). The trace penalties in :mod:`nmelab.regularizers.trace_penalties` carry the ½ so that
    at the same σ they equal this second-order term.

    ``value`` is the loss at the perturbed point, ``L(θ + ε)``. ``ε`` is drawn from ``key`` with
    the params' dtypes. With ``has_aux`` one extra forward pass at θ supplies the clean-pass
    statistics (the noisy pass's aux is discarded); without aux there is no clean pass at all.

    Attributes:
      sigma: σ ≥ 0, the noise standard deviation (a pytree leaf).
    """

    sigma: Any

    def __post_init__(self) -> None:
        check_nonnegative(self.sigma, "sigma", self.name, "noise standard deviation σ")

    def _compute(
        self, objective: Objective, params: Params, batch: Batch, key: Key | None
    ) -> tuple[jax.Array, Any, PyTree]:
        perturbed = tree_add_scaled(params, self.sigma, random_like(key, params, "gaussian"))
        value, _, grads = clean_value_and_grad(objective, perturbed, batch)
        aux = objective.value_and_aux(params, batch)[1] if objective.has_aux else None
        return value, aux, grads
