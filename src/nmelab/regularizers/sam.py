"""Sharpness-Aware Minimization, normalised (SAM, eq. 42) and unnormalised (USAM, eq. 43)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax

from nmelab.objective import Objective
from nmelab.regularizers.base import (
    Regularizer,
    check_nonnegative,
    register,
    safe_normalize,
    tree_add_scaled,
)
from nmelab.regularizers.penalties import clean_value_and_grad
from nmelab.types import Batch, Key, Params, PyTree


@dataclasses.dataclass(frozen=True)
class _AscentStep(Regularizer):
    """Shared body of SAM and USAM: the gradient at ``θ + ρ·d``, ``d`` from the clean gradient."""

    rho: Any
    normalized: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_nonnegative(self.rho, "rho", self.name, "ascent radius ρ")

    def _compute(
        self, objective: Objective, params: Params, batch: Batch, key: Key | None
    ) -> tuple[jax.Array, Any, PyTree]:
        _, aux, grads = clean_value_and_grad(objective, params, batch)
        direction = safe_normalize(grads)[0] if self.normalized else grads
        perturbed = tree_add_scaled(params, self.rho, direction)
        value, _, perturbed_grads = clean_value_and_grad(objective, perturbed, batch)
        return value, aux, perturbed_grads


@register("sam")
@dataclasses.dataclass(frozen=True)
class SAM(_AscentStep):
    """SAM (Foret et al.; paper eq. 42): direction ``∇L(θ + ρ·g/‖g‖)`` with ``g = ∇L(θ)``.

    The ascent step ``ε = ρ·g/‖g‖`` is held fixed (no gradient through ``ε``), as in the original
    algorithm; ``value`` is the loss at the perturbed point, ``L(θ + ε)``. Two gradient evaluations
    per step. To first order in ρ it equals the ``p = 1`` gradient penalty (App. B.2):
    ``∇L(θ + ρu) = g + ρHu + O(ρ²)``. Unlike the penalty, SAM measures the gradient *change* over a
    finite step, so for ReLU networks it sees activation kinks that the AD Hessian misses.

    At ``g = 0``, ``ε = 0`` (no NaN). With ``has_aux`` the statistics of the clean pass at θ are
    returned and those of the perturbed pass discarded (as in google-research/sam).

    Attributes:
      rho: ρ ≥ 0, the radius of the ascent step (a pytree leaf).
    """

    normalized: ClassVar[bool] = True


@register("usam")
@dataclasses.dataclass(frozen=True)
class USAM(_AscentStep):
    """Unnormalised SAM (paper eq. 43): direction ``∇L(θ + ρ·g)`` with ``g = ∇L(θ)``.

    To first order it is the ``p = 2`` gradient penalty up to a factor 2 in ρ:
    ``∇L(θ + ρg) = g + ρHg + O(ρ²)`` while ``∇(L + ρ‖g‖²) = g + 2ρHg``. ``value`` is ``L(θ + ρg)``;
    aux as for :class:`SAM`.

    Attributes:
      rho: ρ ≥ 0, the step length along the gradient (a pytree leaf).
    """

    normalized: ClassVar[bool] = False
