"""Curvature-trace penalties: the ablations of weight noise in paper eq. 19-20.

All three add ``(σ²/2)·T`` to the loss, where ``T`` is a one-step stochastic estimate of a trace:

* ``hessian_trace``: ``T = tr H`` by Hutchinson, ``vᵀHv`` with random probes ``v``;
* ``gn_trace``: ``T = tr GN`` by the sampled-label estimator of eq. 20;
* ``nme_trace``: ``T = tr NME`` by Hutchinson (the ablation the paper implies).

The ½ is deliberate: ``E_ε[L(θ + ε)] ≈ L(θ) + (σ²/2)·tr H`` for ``ε ~ N(0, σ²I)``, so at equal σ
each penalty is (part of) the second-order term of :class:`~nmelab.regularizers.noise.WeightNoise`.
The paper's eq. 17 and 19 write ``σ²·tr(·)``, dropping the ½ of the Taylor expansion: a trace
penalty with coefficient ``σ²_paper·tr(·)`` is ours with ``σ² = 2·σ²_paper``. For weight noise σ
means the same in both.

Each penalty is differentiated *exactly* for its sampled probe or label: the gradient of ``vᵀHv``
is a third derivative of the loss (through the activations' ``φ'''``).

How ``vᵀHv`` and its gradient are computed, and the traps:

* ``vᵀHv`` is the second directional derivative ``d²/dt² L(θ + tv)``, taken by *nested forward
  mode* (``jvp`` of ``jvp``), then one reverse pass for its gradient. The obvious alternative,
  ``grad`` of ``vᵀ·jvp(grad L)(v)`` (reverse-over-forward-over-reverse), was measured 10x an SGD
  step on a small CNN on XLA's CPU backend against 3x for this route
  (``benchmarks/bench_regularizers.py --alternatives``).
* ``jax.experimental.jet`` (Taylor mode) would be cheaper but silently *ignores* ``custom_jvp``
  rules, which would erase the engineered second derivatives of
  :mod:`nmelab.activations` (augmented ReLU, diminished GELU).
* The NME trace cannot be differentiated through :func:`nmelab.curvature.nme_vector_product`:
  that product freezes the residual ``∂L/∂z`` with ``stop_gradient`` (correct for the *matrix*,
  whose Jacobian it is), so ``∇_θ(vᵀ·NME v)`` would silently lose the term
  ``Σ_k ∇_θ(∂L/∂z_k)·vᵀ∇²z_k v``. Here ``vᵀ NME v = Σ_k (∂L/∂z_k)·d²z_k/dt²`` is built from the
  second directional derivative of the *outputs* with a live residual.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from nmelab import losses, validation
from nmelab._tree import tree_add_scaled, tree_sq_norm
from nmelab.estimators import probes as estimator_probes
from nmelab.estimators.probes import PROBES
from nmelab.objective import Objective
from nmelab.regularizers.base import (
    Regularizer,
    check_choice,
    check_nonnegative,
    check_positive_int,
    register,
    static_field,
)
from nmelab.types import Batch, Key, Params, PyTree

GN_TRACE_FORMS: tuple[str, ...] = ("minibatch", "per_example")


def second_directional_derivative(
    fn: Callable[[Params], tuple[jax.Array, Any]], params: Params, v: PyTree
) -> tuple[jax.Array, jax.Array, Any]:
    """``(f(θ), d²/dt² f(θ + tv)|₀, aux)`` for ``fn(θ) -> (f, aux)``, by ``jvp`` of ``jvp``.

    Nested forward mode honours ``custom_jvp`` rules at both orders (``jax.experimental.jet``
    does not). ``f`` and ``aux`` are the primal outputs and stay differentiable in θ.
    """

    def slope(q: Params) -> tuple[jax.Array, tuple[jax.Array, Any]]:
        out, d_out, aux = jax.jvp(fn, (q,), (v,), has_aux=True)
        return d_out, (out, aux)

    _, second, (out, aux) = jax.jvp(slope, (params,), (v,), has_aux=True)
    return out, second, aux


_UNROLL_PROBES = 8


def map_probes(
    one: Callable[[PyTree], tuple[Any, jax.Array, Any]],
    key: Key,
    params: Params,
    num_probes: int,
    probe: str,
) -> tuple[Any, jax.Array, Any]:
    """Apply ``one(v) -> (primal, per-probe, aux)`` to ``num_probes`` probes, one after the other.

    Probe ``s`` is ``sample_probe(keys[s], params, probe)`` with
    ``keys = probe_keys(key, num_probes)``, the convention of every estimator in
    :mod:`nmelab.estimators.probes`, so a key gives the same probes as :func:`nmelab.trace`.

    The primal and aux do not depend on the probe; those of the first are returned (XLA merges the
    identical primal computations of an unrolled loop). Probes are *not* ``vmap``-ed: a probe axis
    turns every matmul and convolution into a batched one, and the vmapped third-order program was
    measured 14-26x an SGD step for 2 probes on XLA's CPU backend, against 5.5-7x run one after the
    other. Up to 8 probes are unrolled, more run in ``lax.map``.
    """

    def with_key(k: Key) -> tuple[Any, jax.Array, Any]:
        return one(estimator_probes.sample_probe(k, params, probe))

    keys = estimator_probes.probe_keys(key, num_probes)
    if num_probes <= _UNROLL_PROBES:
        results = [with_key(keys[s]) for s in range(num_probes)]
        primal, _, aux = results[0]
        return primal, jnp.stack([r[1] for r in results]), aux
    primals, per_probe, auxes = jax.lax.map(with_key, keys)
    first = jax.tree.map(lambda leaf: leaf[0], (primals, auxes))
    return first[0], per_probe, first[1]


@dataclasses.dataclass(frozen=True)
class _HutchinsonPenalty(Regularizer):
    """Shared body: ``L + (σ²/2)·(1/S)Σ_s v_sᵀ A v_s`` and its exact gradient for drawn probes."""

    sigma: Any
    num_probes: int = static_field(1)
    probe: str = static_field("gaussian")

    def __post_init__(self) -> None:
        check_nonnegative(self.sigma, "sigma", self.name, "noise scale σ")
        check_positive_int(self.num_probes, "num_probes", self.name)
        check_choice(self.probe, "probe", self.name, PROBES)

    def _quadratic_forms(
        self, objective: Objective, params: Params, batch: Batch, key: Key
    ) -> tuple[jax.Array, jax.Array, Any]:
        """Return ``(v_sᵀ A(θ) v_s for each probe drawn from key, L(θ), aux)``, differentiable."""
        raise NotImplementedError

    def _compute(
        self, objective: Objective, params: Params, batch: Batch, key: Key | None
    ) -> tuple[jax.Array, Any, PyTree]:
        def total(q: Params) -> tuple[jax.Array, Any]:
            forms, loss, aux = self._quadratic_forms(objective, q, batch, key)
            return loss + 0.5 * self.sigma**2 * jnp.mean(forms), aux

        (value, aux), grads = jax.value_and_grad(total, has_aux=True)(params)
        return value, aux, grads


@register("hessian_trace", stochastic=True)
@dataclasses.dataclass(frozen=True)
class HessianTrace(_HutchinsonPenalty):
    """``L + (σ²/2)·tr H`` with Hutchinson's ``tr H ≈ (1/S) Σ_s v_sᵀ H v_s`` (paper eq. 19).

    ``value`` is ``L(θ) + (σ²/2)·(1/S)Σ v_sᵀHv_s`` and the direction its exact gradient for the
    drawn probes: ``∇L + (σ²/2)(1/S) Σ_s ∇_θ(v_sᵀ H(θ) v_s)``, a third derivative. The paper uses
    one probe ``ε ~ N(0, I)`` per step (§5.2, eq. 19; it writes ``σ²·tr H``, see the module note on
    the ½), hence the default ``probe="gaussian"``. Rademacher probes (±1) give the same expectation
    with variance ``2(‖H‖_F² − Σ_i H_ii²)`` instead of ``2‖H‖_F²``: a different estimator, so a run
    records which one it used (:meth:`~nmelab.regularizers.Regularizer.record`). The estimate is
    unbiased but ``vᵀHv`` can be negative (``H`` is indefinite), which can destabilise training.

    Attributes:
      sigma: σ ≥ 0 (a pytree leaf).
      num_probes: ``S ≥ 1`` probes per step (static).
      probe: ``"gaussian"`` (default: the paper's ``ε ~ N(0, I)``) or ``"rademacher"`` (lower
        variance) (static).
    """

    def _quadratic_forms(
        self, objective: Objective, params: Params, batch: Batch, key: Key
    ) -> tuple[jax.Array, jax.Array, Any]:
        def loss_fn(q: Params) -> tuple[jax.Array, Any]:
            return objective.value_and_aux(q, batch)

        def one(v: PyTree) -> tuple[jax.Array, jax.Array, Any]:
            return second_directional_derivative(loss_fn, params, v)

        loss, forms, aux = map_probes(one, key, params, self.num_probes, self.probe)
        return forms, loss, aux


@register("nme_trace", stochastic=True)
@dataclasses.dataclass(frozen=True)
class NMETrace(_HutchinsonPenalty):
    """``L + (σ²/2)·tr NME`` by Hutchinson, ``vᵀ NME v = Σ_k (∂L/∂z_k)·vᵀ∇²_θ z_k v`` (eq. 2, 19).

    The ablation the paper implies: the part of weight noise's second-order term that eq. 18
    (Bishop) drops. ``value`` is ``L + (σ²/2)(1/S)Σ v_sᵀ NME v_s``; the direction is its exact
    gradient, including the dependence of the residual ``∂L/∂z`` on θ (see the module note for
    why :func:`nmelab.curvature.nme_vector_product` cannot be differentiated for this). Equals
    ``hessian_trace`` minus the GN part for the same probes.

    Attributes:
      sigma: σ ≥ 0 (a pytree leaf).
      num_probes: ``S ≥ 1`` probes per step (static).
      probe: ``"gaussian"`` (default, as for ``hessian_trace``) or ``"rademacher"`` (static).
    """

    def _quadratic_forms(
        self, objective: Objective, params: Params, batch: Batch, key: Key
    ) -> tuple[jax.Array, jax.Array, Any]:
        x, y = batch

        def outputs_fn(q: Params) -> tuple[jax.Array, Any]:
            return objective.outputs_and_aux(q, x)

        def one(v: PyTree) -> tuple[jax.Array, jax.Array, Any]:
            return second_directional_derivative(outputs_fn, params, v)

        z, d2z, aux = map_probes(one, key, params, self.num_probes, self.probe)
        loss, residual = jax.value_and_grad(objective.loss_fn)(z, y)
        forms = jnp.sum(residual * d2z, axis=tuple(range(1, d2z.ndim)))
        return forms, loss, aux


# --------------------------------------------------------------------------------------------
# the sampled-label Gauss-Newton trace (eq. 20)
# --------------------------------------------------------------------------------------------


def is_cross_entropy(objective: Objective) -> bool:
    """Whether the objective's loss is nmelab's softmax cross-entropy."""
    return objective.loss == "cross_entropy" or objective.loss is losses.cross_entropy


def sample_labels(logits: jax.Array, key: Key) -> jax.Array:
    """``ŷ_n ~ Cat(softmax z_n)`` independently per example, as integer labels (no gradient).

    Draws exactly the labels of :func:`nmelab.curvature.sampled_targets` with one sample, so the
    same key gives the same labels as the sampled-label Fisher.
    """
    logits = jax.lax.stop_gradient(logits)
    return jax.random.categorical(key, logits, axis=-1, shape=(1, *logits.shape[:-1]))[0]


def sampled_targets_for(logits: jax.Array, labels: jax.Array, straight_through: bool) -> jax.Array:
    """One-hot targets of ``labels``; with ``straight_through``, ``onehot + p − sg(p)``.

    The straight-through targets equal the one-hot vectors in value but pass the derivative of
    ``p = softmax(z)`` (Bengio et al., 2013), i.e. the gradient flows "through the sampling".
    """
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    if not straight_through:
        return onehot
    probs = jax.nn.softmax(logits, axis=-1)
    return onehot + probs - jax.lax.stop_gradient(probs)


@register("gn_trace", stochastic=True)
@dataclasses.dataclass(frozen=True)
class GNTrace(Regularizer):
    """``L + (σ²/2)·T̂`` with ``T̂`` the sampled-label estimate of ``tr GN`` (paper eq. 20).

    Labels ``ŷ_n ~ Cat(softmax z_n)`` are drawn from ``key`` (one per example, from the clean
    logits), and, since ``E_ŷ[∇_z ℓ(z, ŷ)] = 0``, both forms below are unbiased for the trace of the
    Gauss-Newton matrix of the *mean* loss:

    * ``form="minibatch"`` (default): ``T̂ = N·‖∇_θ L(θ, ŷ)‖²`` - the factor ``N`` undoes the
      ``1/N²`` of the squared mean gradient (the paper's eq. 20 omits it);
    * ``form="per_example"``: ``T̂ = (1/N)Σ_n ‖∇_θ ℓ_n(θ, ŷ_n)‖²``, lower variance, but it
      evaluates the model on each example alone (``vmap`` over examples; ``N`` per-example
      gradients and Hessian-vector products in memory) and so is refused for objectives with aux
      (train-mode BatchNorm couples the examples). Cost on CPU: about 5 SGD steps for a small CNN,
      but hundreds for a wide MLP (784-512-512-10), whose per-example matrix-vector products
      XLA runs poorly; a sequential loop was 24x there but 13x on the CNN, so ``vmap`` is kept.

    ``value`` is ``L(θ, y) + (σ²/2)·T̂``. Its gradient for fixed ``ŷ`` is
    ``∇L + σ²·N·Ĥĝ`` (minibatch) with ``ĝ = ∇L(θ, ŷ)`` and ``Ĥ`` the Hessian of ``L(θ, ŷ)``: one
    forward-over-reverse Hessian-vector product, sharing the forward pass with ``∇L(θ, y)``. As eq. 21
    notes, ``Ĥ = GN + NME(ŷ)``, so the NME enters the update though not the penalty. No gradient
    flows through the sampling unless ``straight_through=True``, which uses the targets
    ``onehot(ŷ) + p − sg(p)``. The paper writes ``σ²·T``; see the module note on the ½.

    Only for the cross-entropy loss (the estimator needs the categorical predictive distribution).

    Attributes:
      sigma: σ ≥ 0 (a pytree leaf).
      form: ``"minibatch"`` or ``"per_example"`` (static).
      straight_through: pass gradients through the label sampling (static).
    """

    sigma: Any
    form: str = static_field("minibatch")
    straight_through: bool = static_field(False)

    def __post_init__(self) -> None:
        check_nonnegative(self.sigma, "sigma", self.name, "noise scale σ")
        check_choice(self.form, "form", self.name, GN_TRACE_FORMS)
        check_choice(self.straight_through, "straight_through", self.name, (False, True))

    def _compute(
        self, objective: Objective, params: Params, batch: Batch, key: Key | None
    ) -> tuple[jax.Array, Any, PyTree]:
        if not is_cross_entropy(objective):
            raise ValueError(
                f"{self.name} samples labels from softmax(z) and needs loss='cross_entropy', "
                f"got loss={objective.loss!r}"
            )
        if self.form == "per_example" and objective.has_aux:
            raise ValueError(
                f"{self.name}: form='per_example' evaluates the model on one example at a time, "
                "which changes a batch-coupled model (train-mode BatchNorm, has_aux=True); "
                "use form='minibatch'"
            )
        if self.form == "minibatch":
            return self._minibatch(objective, params, batch, key)
        return self._per_example(objective, params, batch, key)

    def _minibatch(
        self, objective: Objective, params: Params, batch: Batch, key: Key
    ) -> tuple[jax.Array, Any, PyTree]:
        x, y = batch
        num = validation.batch_size(x, "batch x")
        loss_fn = objective.loss_fn

        def sampled_grad(q: Params) -> tuple[PyTree, tuple[PyTree, jax.Array, Any]]:
            z, pullback, aux = jax.vjp(lambda s: objective.outputs_and_aux(s, x), q, has_aux=True)
            targets = sampled_targets_for(z, sample_labels(z, key), self.straight_through)
            loss, residual = jax.value_and_grad(loss_fn)(z, y)
            (grads,) = pullback(residual)
            (sampled,) = pullback(jax.grad(loss_fn)(z, targets))
            return sampled, (grads, loss, aux)

        sampled, hvp, (grads, loss, aux) = jax.linearize(sampled_grad, params, has_aux=True)
        trace = num * tree_sq_norm(sampled)
        update = tree_add_scaled(grads, self.sigma**2 * num, hvp(sampled))
        return loss + 0.5 * self.sigma**2 * trace, aux, update

    def _per_example(
        self, objective: Objective, params: Params, batch: Batch, key: Key
    ) -> tuple[jax.Array, Any, PyTree]:
        x, y = batch
        loss_fn = objective.loss_fn

        def clean(q: Params) -> tuple[jax.Array, jax.Array]:
            z = objective.outputs(q, x)
            return loss_fn(z, y), z

        (loss, logits), grads = jax.value_and_grad(clean, has_aux=True)(params)
        labels = sample_labels(logits, key)

        def example(x_n: Any, label_n: jax.Array) -> tuple[jax.Array, PyTree]:
            x_one = jax.tree.map(lambda leaf: leaf[None], x_n)

            def sampled_grad(q: Params) -> PyTree:
                z, pullback = jax.vjp(lambda s: objective.outputs(s, x_one), q)
                targets = sampled_targets_for(z, label_n[None], self.straight_through)
                return pullback(jax.grad(loss_fn)(z, targets))[0]

            sampled, hvp = jax.linearize(sampled_grad, params)
            return tree_sq_norm(sampled), hvp(sampled)

        sq_norms, products = jax.vmap(example)(x, labels)
        mean_product = jax.tree.map(lambda leaf: jnp.mean(leaf, axis=0), products)
        update = tree_add_scaled(grads, self.sigma**2, mean_product)
        return loss + 0.5 * self.sigma**2 * jnp.mean(sq_norms), None, update
