"""SGD with momentum, L2 weight decay and a warmup + cosine learning-rate schedule, through optax.

Weight decay is the *L2* kind: the optimizer adds ``λ θ`` to the update direction before the
momentum buffer (``optax.add_decayed_weights`` ahead of ``optax.sgd``), i.e. it descends on
``L + (λ/2)‖θ‖²``. This is PyTorch's ``SGD(weight_decay=λ)`` and the convention of the paper's recipes
(Zagoruyko & Komodakis 2016: λ = 5e-4; Goyal et al. 2018: λ = 1e-4). The trap: the decay term is
*not* part of the objective the regularizer sees - SAM's perturbation and the gradient penalty are
computed on the data loss alone, and ``λ θ`` is added to the regularizer's direction afterwards, as
in google-research/sam.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("cosine", "constant")
WEIGHT_DECAY_MASKS = ("all", "no_bn_bias")


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


def _decay_mask(kind: str) -> Callable | None:
    if kind == "all":
        return None
    if kind == "no_bn_bias":
        return lambda params: jax.tree.map(lambda p: jnp.ndim(p) > 1, params)
    raise ValueError(f"weight_decay_mask: expected one of {WEIGHT_DECAY_MASKS}, got {kind!r}")


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
      weight_decay_mask: ``"all"`` or ``"no_bn_bias"`` (no decay on 1-D leaves).

    Raises:
      ValueError: ``momentum`` outside ``[0, 1)`` or negative ``weight_decay``.
    """
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum: expected 0 <= momentum < 1, got {momentum}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay: expected >= 0, got {weight_decay}")
    parts = []
    mask = _decay_mask(weight_decay_mask)
    if weight_decay > 0:
        parts.append(optax.add_decayed_weights(weight_decay, mask))
    parts.append(optax.sgd(schedule, momentum=momentum or None, nesterov=nesterov))
    return optax.chain(*parts)
