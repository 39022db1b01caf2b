"""Sharpness-Aware Minimization, normalised (SAM, eq. 42) and unnormalised (USAM, eq. 43).

Weight decay and the ascent step. With L2 weight decay λ there are two ways to run SAM, and they
are different algorithms:

* ``weight_decay=0`` (the default): the ascent step sees the data loss only, ``ε = ρ·g/‖g‖``
  with ``g = ∇L(θ)``, and the optimizer adds ``λ·m ⊙ θ`` to the returned direction ``∇L(θ + ε)``.
* ``weight_decay=λ`` (google-research/sam, whose ``train_step`` adds ``0.5·λ·Σ‖w‖²`` to the loss
  before SAM's two gradient evaluations): SAM runs on ``F(θ) = L(θ) + (λ/2)‖m ⊙ θ‖²``. The ascent
  direction is ``∇F(θ) = g + λ·m ⊙ θ`` and the reference's update direction is
  ``∇F(θ + ε) = ∇L(θ + ε) + λ·m ⊙ (θ + ε)``. The optimizer still adds ``λ·m ⊙ θ`` (set the same
  λ and mask there), so this regularizer returns ``∇L(θ + ε) + λ·m ⊙ ε``: the sum is the
  reference's direction. Pass the optimizer's λ and mask here, or the decay is counted wrongly.

The two differ in the direction of ε (the decay term tilts it outward along ``m ⊙ θ``; for the
normalised step this matters most when ``‖g‖`` is small against ``λ‖θ‖``, late in training) and by ``λ·m ⊙ ε`` in the
update. To first order in ρ both are still gradient penalties (App. B.2), but of ``‖∇F‖`` rather
than ``‖∇L‖`` in the second case.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from nmelab._tree import tree_add_scaled, tree_normalize
from nmelab.objective import Objective
from nmelab.regularizers.base import Regularizer, check_nonnegative, register, static_field
from nmelab.regularizers.penalties import clean_value_and_grad
from nmelab.regularizers.weight_decay import check_weight_decay_mask, weight_decay_mask
from nmelab.types import Batch, Key, Params, PyTree

__all__ = ["SAM", "USAM"]


@dataclasses.dataclass(frozen=True)
class _AscentStep(Regularizer):
    """Shared body of SAM and USAM: the gradient at ``θ + ρ·d``, ``d`` from the ascent gradient."""

    rho: Any
    weight_decay: Any = 0.0
    weight_decay_mask: str = static_field("all")
    normalized: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_nonnegative(self.rho, "rho", self.name, "ascent radius ρ")
        check_nonnegative(self.weight_decay, "weight_decay", self.name, "L2 coefficient λ")
        check_weight_decay_mask(self.weight_decay_mask, f"{self.name}: weight_decay_mask")

    def _compute(
        self, objective: Objective, params: Params, batch: Batch, key: Key | None
    ) -> tuple[jax.Array, Any, PyTree]:
        _, aux, grads = clean_value_and_grad(objective, params, batch)
        mask = weight_decay_mask(params, self.weight_decay_mask)
        ascent = tree_add_scaled(grads, self.weight_decay, _masked(params, mask))
        direction = tree_normalize(ascent)[0] if self.normalized else ascent
        perturbed = tree_add_scaled(params, self.rho, direction)
        value, _, perturbed_grads = clean_value_and_grad(objective, perturbed, batch)
        decay_of_step = _masked(direction, mask)
        return (
            value,
            aux,
            tree_add_scaled(perturbed_grads, self.weight_decay * self.rho, decay_of_step),
        )


def _masked(tree: PyTree, mask: PyTree) -> PyTree:
    """``m ⊙ v`` for a pytree of Python bools ``m``."""
    return jax.tree.map(lambda leaf, keep: leaf if keep else jnp.zeros_like(leaf), tree, mask)


@register("sam")
@dataclasses.dataclass(frozen=True)
class SAM(_AscentStep):
    """SAM (Foret et al.; paper eq. 42): direction ``∇L(θ + ε)``, ``ε = ρ·a/‖a‖``.

    ``a = g = ∇L(θ)`` by default; with ``weight_decay = λ > 0``, ``a = g + λ·m ⊙ θ`` and the direction
    gains ``λ·m ⊙ ε`` (google-research/sam's placement of weight decay; see the module note). The
    ascent step ``ε`` is held fixed (no gradient through ``ε``), as in the original algorithm;
    ``value`` is the data loss at the perturbed point, ``L(θ + ε)``. Two gradient evaluations per
    step. To first order in ρ it equals the ``p = 1`` gradient penalty (App. B.2):
    ``∇L(θ + ρu) = g + ρHu + O(ρ²)``. Unlike the penalty, SAM measures the gradient *change* over a
    finite step, so for ReLU networks it sees activation kinks that the AD Hessian misses.

    At ``a = 0``, ``ε = 0`` (no NaN). With ``has_aux`` the statistics of the clean pass at θ are
    returned and those of the perturbed pass discarded (as in google-research/sam).

    Attributes:
      rho: ρ ≥ 0, the radius of the ascent step (a pytree leaf).
      weight_decay: λ ≥ 0 of the ``(λ/2)‖m ⊙ θ‖²`` inside the perturbed loss (a pytree leaf; 0:
        the ascent sees the data loss only). Must equal the optimizer's λ when positive.
      weight_decay_mask: the mask ``m``, a name of :mod:`nmelab.regularizers.weight_decay` (static;
        must equal the optimizer's).
    """

    normalized: ClassVar[bool] = True


@register("usam")
@dataclasses.dataclass(frozen=True)
class USAM(_AscentStep):
    """Unnormalised SAM (paper eq. 43): direction ``∇L(θ + ρ·a)``, ``a = ∇L(θ)`` by default.

    To first order it is the ``p = 2`` gradient penalty up to a factor 2 in ρ:
    ``∇L(θ + ρg) = g + ρHg + O(ρ²)`` while ``∇(L + ρ‖g‖²) = g + 2ρHg``. ``value`` is ``L(θ + ρa)``;
    aux as for :class:`SAM`. Weight decay as for :class:`SAM`: with ``weight_decay = λ``,
    ``a = g + λ·m ⊙ θ`` and the direction gains ``λ·m ⊙ ρa`` (the unnormalised step follows the
    decay term in full, so it matters here at every ‖g‖).

    Attributes:
      rho: ρ ≥ 0, the step length along the ascent gradient (a pytree leaf).
      weight_decay: λ ≥ 0 inside the perturbed loss, as for :class:`SAM` (a pytree leaf).
      weight_decay_mask: the mask ``m``, as for :class:`SAM` (static).
    """

    normalized: ClassVar[bool] = False
