"""Sharpness regularizers behind one interface: ``get(name, **hparams).value_and_grad(...)``.

>>> reg = nmelab.regularizers.get("sam", rho=0.05)                       # doctest: +SKIP
>>> value, grads = reg.value_and_grad(objective, params, batch, key)    # doctest: +SKIP
>>> updates, opt_state = optimizer.update(grads, opt_state, params)     # doctest: +SKIP

Each regularizer is a frozen dataclass and a JAX pytree. Its float hyperparameters (ρ, σ) are
pytree leaves, so pass the regularizer as an *argument* of a jitted step (the objective static):
one compilation serves every ρ/σ, and a stacked ρ can be ``vmap``-ed. Structural hyperparameters
(``p``, ``num_probes``, ``probe``, ``form``, ``straight_through``, ``weight_decay_mask``) are
static. ``reg.record()`` lists every hyperparameter with its value, defaults included (which
probe, which form), for a run's record.

``value_and_grad(objective, params, batch, key)`` returns ``(value, grads)``, or
``((value, aux), grads)`` when ``objective.has_aux`` (the ``jax.value_and_grad(has_aux=True)``
convention). ``grads`` is the update direction for any optax optimizer; ``value`` is:

================  ======================================  ========================================
name              value                                   direction
================  ======================================  ========================================
none              ``L(θ)``                                ``∇L``
gradient_penalty  ``L + ρ‖∇L‖ᵖ`` (eq. 7)                  ``g + ρHg/‖g‖`` (p=1), ``g + 2ρHg``
sam               ``L(θ + ρg/‖g‖)``                       ``∇L(θ + ρg/‖g‖)`` (eq. 42) [#wd]_
usam              ``L(θ + ρg)``                           ``∇L(θ + ρg)`` (eq. 43) [#wd]_
weight_noise      ``L(θ + ε)``, ``ε ~ N(0, σ²I)``         ``∇L(θ + ε)`` (eq. 17)
hessian_trace     ``L + (σ²/2)·vᵀHv``, ``v ~ N(0, I)``    its exact gradient (eq. 19)
gn_trace          ``L + (σ²/2)·N‖∇L(θ, ŷ)‖²``             its exact gradient, ŷ fixed (eq. 20)
nme_trace         ``L + (σ²/2)·vᵀ NME v``                 its exact gradient
================  ======================================  ========================================

.. [#wd] With ``weight_decay=λ`` SAM and USAM perturb ``L + (λ/2)‖m ⊙ θ‖²`` instead, as
   google-research/sam does (:mod:`nmelab.regularizers.sam`).

**The ½.** The trace penalties carry ``σ²/2`` so that at equal σ they equal the second-order term
of weight noise, ``E[L(θ + ε)] ≈ L + (σ²/2)·tr H``. The paper's eq. 17 and 19 write ``σ²·tr(·)``
and drop the ½: the paper's coefficient σ² is our σ²/2.

**Statistics (aux) policy.** For objectives with state (``has_aux=True``, e.g. train-mode BatchNorm
returning updated ``batch_stats``), the returned ``aux`` always comes from the *clean* pass at θ,
as in google-research/sam; the aux of every perturbed pass (SAM's ascent point, the noisy weights)
is discarded. ``weight_noise`` has no clean pass of its own, so with aux it runs one extra forward
pass at θ. Gradients are those of the batch-coupled function (statistics of the current batch).

**Randomness.** ``weight_noise``, ``hessian_trace``, ``gn_trace`` and ``nme_trace`` need a
``key`` (a ValueError otherwise); split a fresh one per step. The others ignore it.
"""

from nmelab.regularizers import noise, penalties, sam, trace_penalties, weight_decay
from nmelab.regularizers.base import Regularizer, get, hyperparameters, names
from nmelab.regularizers.noise import WeightNoise
from nmelab.regularizers.penalties import GradientPenalty, NoRegularizer
from nmelab.regularizers.sam import SAM, USAM
from nmelab.regularizers.trace_penalties import GNTrace, HessianTrace, NMETrace

_DOC_ORDER = ("none", "gradient_penalty", "sam", "usam", "weight_noise")
NAMES: tuple[str, ...] = tuple(
    sorted(names(), key=lambda n: _DOC_ORDER.index(n) if n in _DOC_ORDER else len(_DOC_ORDER))
)
"""The valid names for :func:`get`."""

__all__ = [
    "NAMES",
    "SAM",
    "USAM",
    "GNTrace",
    "GradientPenalty",
    "HessianTrace",
    "NMETrace",
    "NoRegularizer",
    "Regularizer",
    "WeightNoise",
    "get",
    "hyperparameters",
    "names",
    "noise",
    "penalties",
    "sam",
    "trace_penalties",
    "weight_decay",
]
