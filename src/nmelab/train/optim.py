"""SGD with momentum, L2 weight decay and a warmup + cosine learning-rate schedule, through optax.

Weight decay is the *L2* kind: the optimizer adds ``λ·m ⊙ θ`` to the update direction before the
momentum buffer (``optax.add_decayed_weights`` ahead of ``optax.sgd``), i.e. it descends on
``L + (λ/2)‖m ⊙ θ‖²``. This is PyTorch's ``SGD(weight_decay=λ)`` and the convention of the paper's
recipes (Zagoruyko & Komodakis 2016: λ = 5e-4 on every parameter; Goyal et al. 2017: λ = 1e-4, no
decay on BN γ/β). The mask ``m`` is one of the named masks of
:mod:`nmelab.regularizers.weight_decay` (``"all"``, ``"no_bn"``, ``"no_bn_and_bias"``).

The learning rate multiplies the momentum buffer (``m = μm + d; θ -= η(t)·m``), the form of Goyal et
al.'s eq. 10, which needs no "momentum correction" when η changes.

Trap: by default the decay term is *not* part of the objective the regularizer sees - SAM's ascent
step and the gradient penalty are computed on the data loss alone and ``λ·m ⊙ θ`` is added to the
regularizer's direction here. google-research/sam instead puts ``(λ/2)‖θ‖²`` into the loss that SAM
perturbs; :class:`nmelab.regularizers.SAM` does that with its ``weight_decay`` hyperparameter (the
config key ``sam_decay_in_loss``), still leaving the ``λ·m ⊙ θ`` at θ to this optimizer.
"""

from __future__ import annotations

from functools import partial

import optax

from nmelab.regularizers import weight_decay as decay
from nmelab.regularizers.weight_decay import WEIGHT_DECAY_MASKS

__all__ = ["SCHEDULES", "WEIGHT_DECAY_MASKS", "learning_rate_schedule", "sgd"]

SCHEDULES = ("cosine", "constant")


def learning_rate_schedule(
    learning_rate: float,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: str = "cosine",
) -> optax.Schedule:
    """Linear warmup from 0 over ``warmup_steps``, then cosine decay to 0 at ``total_steps``.

    ``schedule="constant"`` keeps ``learning_rate`` after the warmup.

    Raises:
      ValueError: negative ``learning_rate``, ``total_steps < 1``, ``warmup_steps`` outside
        ``[0, total_steps]`` or an unknown ``schedule``.
    """
    if learning_rate < 0:
        raise ValueError(f"learning_rate: expected >= 0, got {learning_rate}")
    if total_steps < 1:
        raise ValueError(f"total_steps: expected >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps: expected 0..{total_steps}, got {warmup_steps}")
    if schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, learning_rate, warmup_steps, total_steps, end_value=0.0
        )
    if schedule == "constant":
        if warmup_steps == 0:
            return optax.constant_schedule(learning_rate)
        return optax.join_schedules(
            [
                optax.linear_schedule(0.0, learning_rate, warmup_steps),
                optax.constant_schedule(learning_rate),
            ],
            [warmup_steps],
        )
    raise ValueError(f"lr_schedule: expected one of {SCHEDULES}, got {schedule!r}")


def sgd(
    schedule: optax.Schedule,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    weight_decay_mask: str = "all",
) -> optax.GradientTransformation:
    """SGD with (Nesterov) momentum and L2 weight decay: ``d = g + λθ; m = μm + d; θ -= η(t)·m``.

    With Nesterov the step is ``η(t)·(d + μm)``, as in PyTorch and optax.

    Args:
      schedule: learning rate as a function of the step.
      momentum: ``μ`` in ``[0, 1)``; 0 disables the buffer.
      nesterov: Nesterov momentum.
      weight_decay: ``λ >= 0``.
      weight_decay_mask: one of :data:`WEIGHT_DECAY_MASKS` (which leaves decay; see
        :mod:`nmelab.regularizers.weight_decay`).

    Raises:
      ValueError: ``momentum`` outside ``[0, 1)``, negative ``weight_decay`` or an unknown
        ``weight_decay_mask``.
    """
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum: expected 0 <= momentum < 1, got {momentum}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay: expected >= 0, got {weight_decay}")
    decay.check_weight_decay_mask(weight_decay_mask)
    parts = []
    if weight_decay > 0:
        mask = partial(decay.weight_decay_mask, kind=weight_decay_mask)
        parts.append(optax.add_decayed_weights(weight_decay, mask))
    parts.append(optax.sgd(schedule, momentum=momentum or None, nesterov=nesterov))
    return optax.chain(*parts)
