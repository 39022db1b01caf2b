"""The training objective ``L(θ) = loss(apply_fn(θ, x), y)`` that every curvature operator acts on.

Models with state (BatchNorm)
-----------------------------
``apply_fn(params, x)`` must be a pure function of ``params``. Close over the model's state:

* **Eval mode** (running statistics): ``apply_fn = lambda p, x: model.apply(
  {"params": p, "batch_stats": stats}, x, train=False)``. Every output ``z_n`` depends on its own
  example only, so ``H_z`` is block-diagonal over examples and the split is the textbook one.
* **Train mode** (batch statistics): ``apply_fn = lambda p, x: model.apply({"params": p,
  "batch_stats": stats}, x, train=True, mutable=["batch_stats"])`` with ``has_aux=True``. The output
  for one example now depends on every example of the batch, and ``J`` is the Jacobian of that
  batch-coupled function. ``H = GN + NME`` still holds exactly; the GN is the Gauss-Newton matrix of
  the batch-normalised network, not of the per-example eval network, so the two modes give different
  (both correct) matrices. The updated statistics are returned as the auxiliary output and never
  differentiated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

from nmelab import losses
from nmelab.types import ApplyFn, Batch, LossFn, Params

__all__ = ["Objective"]


@dataclasses.dataclass(frozen=True)
class Objective:
    """A model and a loss: ``L(θ) = loss(z(θ, x), y)`` with ``z = apply_fn(θ, x)``.

    Objectives are hashable and used as static arguments of jitted functions: two objectives are equal
    when their ``apply_fn`` and ``loss`` are the same objects. Build one per model and reuse it;
    a fresh ``lambda`` or ``functools.partial`` each step forces recompilation.

    Attributes:
      apply_fn: ``apply_fn(params, x) -> outputs``; with ``has_aux``, ``-> (outputs, aux)``.
      loss: ``"cross_entropy"`` (batch-mean softmax cross-entropy, integer or probability targets),
        ``"mse"`` (batch mean of ½‖z − y‖², integer labels one-hot encoded) or a callable
        ``loss(outputs, targets) -> scalar``.
      has_aux: whether ``apply_fn`` also returns auxiliary data (e.g. updated BatchNorm statistics).
    """

    apply_fn: ApplyFn
    loss: str | Callable = "cross_entropy"
    has_aux: bool = False

    def __post_init__(self) -> None:
        if not callable(self.apply_fn):
            raise TypeError(f"apply_fn must be callable, got {type(self.apply_fn).__name__}")
        losses.get(self.loss)

    @property
    def loss_fn(self) -> LossFn:
        """The resolved ``loss(outputs, targets) -> scalar``."""
        return losses.get(self.loss)

    def outputs_and_aux(self, params: Params, x: Any) -> tuple[jax.Array, Any]:
        """Return ``(z, aux)``; ``aux`` is ``None`` without ``has_aux``."""
        out = self.apply_fn(params, x)
        return out if self.has_aux else (out, None)

    def outputs(self, params: Params, x: Any) -> jax.Array:
        """Return the model outputs ``z(θ, x)``."""
        return self.outputs_and_aux(params, x)[0]

    def value_and_aux(self, params: Params, batch: Batch) -> tuple[jax.Array, Any]:
        """Return ``(L(θ), aux)``."""
        x, y = batch
        z, aux = self.outputs_and_aux(params, x)
        return self.loss_fn(z, y), aux

    def value(self, params: Params, batch: Batch) -> jax.Array:
        """Return the scalar loss ``L(θ)``."""
        return self.value_and_aux(params, batch)[0]
