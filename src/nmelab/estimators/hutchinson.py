"""Traces of H, GN and NME: Hutchinson, Hutch++, exact, the shared-probe split, and eq. 20.

* :func:`trace` dispatches to Hutchinson (Hutchinson 1989), Hutch++ (:mod:`.hutchpp`) or the exact
  sum of the diagonal.
* :func:`trace_split` estimates ``tr H``, ``tr GN`` and ``tr NME`` on the *same* probes, so that
  ``tr H = tr GN + tr NME`` holds probe by probe (paper eq. 2 and 19).
* :func:`gn_trace_sampled` / :func:`gn_trace_sample` are the sampled-label Gauss-Newton trace of
  paper eq. 20 (Wei et al. 2020) for cross-entropy: gradients only, no curvature products.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nmelab import _tree, losses
from nmelab.curvature.operator import Operator, check_inputs
from nmelab.estimators import loops, probes
from nmelab.estimators.diagonal import check_unit_batch, exact_diagonal_flat
from nmelab.estimators.hutchpp import hutchpp_trace
from nmelab.estimators.probes import Estimate, SplitEstimate
from nmelab.objective import Objective
from nmelab.types import Batch, Key, Params

TRACE_METHODS: tuple[str, ...] = ("hutchinson", "hutchpp", "exact")
GN_TRACE_FORMS: tuple[str, ...] = ("minibatch", "per_example")

__all__ = [
    "GN_TRACE_FORMS",
    "TRACE_METHODS",
    "exact_trace",
    "gn_trace_from_labels",
    "gn_trace_sample",
    "gn_trace_sampled",
    "hutchinson_trace",
    "sample_model_labels",
    "trace",
    "trace_split",
]


def trace(
    op: Operator,
    key: Key | None = None,
    num_probes: int | None = None,
    *,
    method: str = "hutchinson",
    probe: str = "rademacher",
    batch_size: int | None = None,
    loop: str = "auto",
) -> Estimate:
    """Estimate ``tr(A)`` for a curvature operator.

    Methods:
      * ``"hutchinson"``: ``tr A = E[vᵀAv]`` for probes with ``E[vvᵀ] = I``; the mean of
        ``num_probes`` samples, stderr ``std(ddof=1)/√n``. Variance per sample:
        ``2(‖A‖_F² − Σ A_ii²)`` for Rademacher probes (the minimum), ``2‖A‖_F²`` for Gaussian ones.
      * ``"hutchpp"``: :func:`~nmelab.estimators.hutchpp.hutchpp_trace` with ``num_probes``
        products in all; much lower variance when the spectrum decays.
      * ``"exact"``: ``Σ_i e_iᵀAe_i`` with ``P`` unit products, ``batch_size`` at a time (default
        64); ``stderr = 0``. Small models only.

    Cost: for :func:`nmelab.hessian`, :func:`nmelab.gauss_newton` and :func:`nmelab.nme` operators
    each sample is a forward-only quadratic form (:func:`nmelab.estimators.probes.split_forms_fn`,
    about one gradient; GN: a JVP); other operators are linearized once inside the ``jit`` and each
    sample is ``⟨v, Av⟩``. Probes are ``vmap``-ed ``batch_size`` at a time through
    ``jax.lax.map``. The function is ``vmap``-able over ``key`` (all shapes are static).

    Trap: the Hessian and NME are indefinite, so single samples ``vᵀAv`` can be negative even when
    the trace is positive (the paper's Hessian-trace penalty went negative late in training).

    Args:
      op: an nmelab operator (symmetric).
      key: the random key (``None`` allowed for ``"exact"``).
      num_probes: probes (Hutchinson) or total products (Hutch++, ``>= 3``); ignored by ``"exact"``.
      method: ``"hutchinson"``, ``"hutchpp"`` or ``"exact"``.
      probe: ``"rademacher"`` or ``"gaussian"``.
      batch_size: probes evaluated together per chunk (default 16; exact: 64).
      loop: ``"auto"``, ``"compiled"`` or ``"python"``; see :mod:`nmelab.estimators.loops`.

    Returns:
      An :class:`~nmelab.estimators.probes.Estimate` with ``value``, ``stderr``, ``num_matvecs`` and
      the per-probe ``samples``.

    Raises:
      TypeError: for a non-operator, a missing or malformed key, or a non-integer count.
      ValueError: for an unknown method or probe, ``num_probes < 1`` (``< 3`` for Hutch++), or a
        non-positive ``batch_size``.
    """
    probes.check_choice(method, "method", TRACE_METHODS)
    if method == "hutchpp":
        return hutchpp_trace(op, key, num_probes, probe=probe, batch_size=batch_size, loop=loop)
    if method == "exact":
        return exact_trace(op, batch_size=batch_size, loop=loop)
    return hutchinson_trace(op, key, num_probes, probe=probe, batch_size=batch_size, loop=loop)


def hutchinson_trace(
    op: Operator,
    key: Key,
    num_probes: int,
    *,
    probe: str = "rademacher",
    batch_size: int | None = None,
    loop: str = "auto",
) -> Estimate:
    """Hutchinson's estimate ``(1/n) Σ_i v_iᵀ A v_i``; see :func:`trace`."""
    num_probes, size = probes.check_probe_arguments(op, key, num_probes, probe, batch_size)
    python = loops.use_python_loop(loop, op.params)
    return _hutchinson(op, key, num_probes, probe, size, python)


def exact_trace(op: Operator, *, batch_size: int | None = None, loop: str = "auto") -> Estimate:
    """``Σ_i e_iᵀ A e_i`` over the ``P`` unit vectors (``stderr = 0``); see :func:`trace`."""
    probes.check_operator(op)
    size = check_unit_batch(op, batch_size)
    return _exact_trace(op, size, loops.use_python_loop(loop, op.params))


@loops.driver(static_argnums=(2, 3, 4))
def _hutchinson(
    op: Operator, key: Key, num_probes: int, probe: str, batch_size: int, python: bool
) -> Estimate:
    keys = probes.probe_keys(key, num_probes)
    samples = loops.map_chunks(
        probes.probe_form, probe, probes.form_context(op), keys, num_probes, batch_size, python
    )
    return probes.mean_estimate(samples, num_probes)


@loops.driver(static_argnums=(1,))
def _exact_trace(op: Operator, batch_size: int, python: bool) -> Estimate:
    flat = exact_diagonal_flat(op, batch_size, python)
    total = jnp.sum(flat)
    return Estimate(total, jnp.zeros_like(total), int(flat.size))


# --------------------------------------------------------------------------------------------
# tr H, tr GN, tr NME on shared probes
# --------------------------------------------------------------------------------------------


def trace_split(
    objective: Objective,
    params: Params,
    batch: Batch,
    key: Key,
    num_probes: int,
    *,
    probe: str = "rademacher",
    batch_size: int | None = None,
    loop: str = "auto",
) -> SplitEstimate:
    """Hutchinson estimates of ``tr H``, ``tr GN`` and ``tr NME`` on the same probes (eq. 2, 19).

    For each probe ``v`` one second-order forward pass along ``v`` gives ``J v`` and
    ``vᵀ∇²_θ z v``, hence ``vᵀGNv = (Jv)ᵀH_z(Jv)`` and ``vᵀNMEv = ∇_zL · vᵀ∇²_θ z v``, and
    ``vᵀHv`` is their sum. These are exactly the quadratic forms of the products of
    :func:`nmelab.linearize_split` (tested probe by probe), at about a third of the cost: no backward
    pass. Sharing probes makes ``tr H = tr GN + tr NME`` exact for every probe, and the NME's
    share ``tr NME / tr H`` far less noisy than from independent probes.

    Args:
      objective: the model and loss.
      params: the point θ.
      batch: ``(x, y)``.
      key: the random key.
      num_probes: the number of shared probes.
      probe: ``"rademacher"`` or ``"gaussian"``.
      batch_size: probes evaluated together per chunk (default 16).
      loop: ``"auto"``, ``"compiled"`` or ``"python"``; see :mod:`nmelab.estimators.loops`.

    Returns:
      A :class:`SplitEstimate` with ``.hessian``, ``.gauss_newton``, ``.nme`` estimates.

    Raises:
      TypeError, ValueError: for malformed inputs (see :func:`trace`).
    """
    check_inputs(objective, params, batch)
    probes.check_key(key)
    num_probes = probes.check_count(num_probes, "num_probes")
    probes.check_choice(probe, "probe", probes.PROBES)
    size = probes.check_batch_size(batch_size, probes.DEFAULT_BATCH_SIZE)
    python = loops.use_python_loop(loop, params)
    return _trace_split(objective, params, tuple(batch), key, num_probes, probe, size, python)


def _split_sample(static: tuple, context: tuple, key: jax.Array):
    objective, probe = static
    params, batch = context
    return probes.split_forms_fn(objective, params, batch)(probes.sample_probe(key, params, probe))


@loops.driver(static_argnums=(0, 4, 5, 6))
def _trace_split(
    objective: Objective,
    params: Params,
    batch: Batch,
    key: Key,
    num_probes: int,
    probe: str,
    batch_size: int,
    python: bool,
) -> SplitEstimate:
    keys = probes.probe_keys(key, num_probes)
    h, gn, nme = loops.map_chunks(
        _split_sample, (objective, probe), (params, batch), keys, num_probes, batch_size, python
    )
    return SplitEstimate(*(probes.mean_estimate(s, num_probes) for s in (h, gn, nme)))


# --------------------------------------------------------------------------------------------
# The sampled-label Gauss-Newton trace (paper eq. 20)
# --------------------------------------------------------------------------------------------


def _check_cross_entropy(objective: Objective) -> None:
    if objective.loss != "cross_entropy" and objective.loss is not losses.cross_entropy:
        raise ValueError(
            "the sampled-label Gauss-Newton trace (eq. 20) needs objective.loss == "
            f"'cross_entropy' (labels are drawn from softmax(z)), got {objective.loss!r}"
        )


def sample_model_labels(objective: Objective, params: Params, x, key: Key) -> jax.Array:
    """Labels ``ŷ_n ~ Cat(softmax z_n)`` drawn independently per example, as constants.

    The logits are ``stop_gradient``-ed; integer labels carry no gradient anyway.
    """
    logits = jax.lax.stop_gradient(objective.outputs(params, x))
    return jax.random.categorical(key, logits, axis=-1)


def _example_sq_norm(objective: Objective, params: Params, example) -> jax.Array:
    """``‖∇ℓ_n(θ, ŷ_n)‖²`` of one example ``(x_n, ŷ_n)``."""
    xn, yn = example
    xn = jax.tree.map(lambda leaf: leaf[None], xn)
    grad = jax.grad(lambda p: objective.loss_fn(objective.outputs(p, xn), yn[None]))(params)
    return _tree.tree_sq_norm(grad)


def gn_trace_from_labels(
    objective: Objective,
    params: Params,
    x,
    labels: jax.Array,
    form: str = "minibatch",
    batch_size: int | None = None,
    *,
    python: bool = False,
) -> jax.Array:
    """One term of eq. 20 for given labels: ``N‖∇L(θ, ŷ)‖²`` or ``(1/N) Σ_n ‖∇ℓ_n(θ, ŷ_n)‖²``.

    Its expectation over ``ŷ_n ~ Cat(softmax z_n)`` (independent per example) is ``tr GN`` of the
    batch-mean cross-entropy; see :func:`gn_trace_sampled`. Differentiable in ``params``.

    Args:
      objective: a cross-entropy objective.
      params: the point θ.
      x: the inputs (an array or pytree with leading axis ``N``).
      labels: ``(N,)`` integer labels (or ``(N, K)`` probability targets).
      form: ``"minibatch"`` or ``"per_example"``.
      batch_size: examples per chunk for ``"per_example"`` (default 32).
      python: run the per-example chunks as a Python loop of jitted steps (convolutional models on
        CPU, :mod:`nmelab.estimators.loops`); not under ``jit``/``grad`` of this function.

    Returns:
      The scalar estimate.
    """
    num = jax.tree.leaves(x)[0].shape[0]
    if form == "minibatch":
        grad = jax.grad(lambda p: objective.loss_fn(objective.outputs(p, x), labels))(params)
        return num * _tree.tree_sq_norm(grad)
    size = probes.DEFAULT_BATCH_SIZE * 2 if batch_size is None else batch_size
    norms = loops.map_chunks(_example_sq_norm, objective, params, (x, labels), num, size, python)
    return jnp.mean(norms)


def gn_trace_sample(
    objective: Objective,
    params: Params,
    batch: Batch,
    key: Key,
    form: str = "minibatch",
    batch_size: int | None = None,
) -> jax.Array:
    """A single-sample estimate of ``tr GN`` (eq. 20), as a pure, differentiable scalar.

    Draws ``ŷ_n ~ Cat(softmax z_n)`` with ``key``, holds them fixed, and returns
    :func:`gn_trace_from_labels`. Usable inside a loss (the GN-trace penalty): its gradient in
    ``params`` is that of ``N‖∇L(θ, ŷ)‖²`` at fixed labels. The batch's own labels ``y`` are
    ignored (still validated). Cost: one forward pass to sample plus one gradient (minibatch) or
    ``N`` per-example gradients (per_example).

    Raises:
      ValueError: for a loss other than cross-entropy or an unknown ``form``.
    """
    _check_cross_entropy(objective)
    probes.check_choice(form, "form", GN_TRACE_FORMS)
    check_inputs(objective, params, batch)
    x = batch[0]
    labels = sample_model_labels(objective, params, x, key)
    return gn_trace_from_labels(objective, params, x, labels, form, batch_size)


def gn_trace_sampled(
    objective: Objective,
    params: Params,
    batch: Batch,
    key: Key,
    num_samples: int,
    *,
    form: str = "minibatch",
    batch_size: int | None = None,
    loop: str = "auto",
) -> Estimate:
    """The sampled-label Gauss-Newton trace of paper eq. 20, averaged over ``num_samples`` draws.

    For the batch-mean cross-entropy ``L = (1/N) Σ_n ℓ(z_n, y_n)`` the output Hessian is
    block-diagonal, ``H_z = (1/N) ⊕_n (diag p_n − p_n p_nᵀ)``, and for ``ŷ_n ~ Cat(p_n)`` the
    output gradient ``g_n = ∇_z ℓ(z_n, ŷ_n) = p_n − e_{ŷ_n}`` has ``E[g_n] = 0`` and
    ``E[g_n g_nᵀ] = diag p_n − p_n p_nᵀ``. Hence, with ``J_n = ∂z_n/∂θ``::

        tr GN = (1/N) Σ_n E‖J_nᵀ g_n‖²                              ("per_example")
              = N · E‖∇_θ L(θ, ŷ)‖²,  ∇_θ L = (1/N) Σ_n J_nᵀ g_n       ("minibatch")

    The factor ``N`` undoes the ``1/N²`` of squaring a mean gradient: one ``1/N`` is the ``1/N`` in
    ``H_z``, and the cross terms ``⟨J_nᵀg_n, J_mᵀg_m⟩`` (n ≠ m) vanish in expectation because the
    labels are drawn *independently per example* and ``E[g_n] = 0``. Both forms are unbiased; the
    per-example form has lower variance (no cross terms) but needs ``N`` per-example gradients.

    Trap: the eq. 20 expectation is over *model-sampled* labels, not the data labels (using ``y``
    gives the empirical Fisher, a different, biased quantity), and without the factor ``N`` the
    minibatch form underestimates ``tr GN`` of the mean loss by ``N``.

    Args:
      objective: a cross-entropy objective.
      params: the point θ.
      batch: ``(x, y)``; ``y`` is ignored after validation.
      key: the random key.
      num_samples: independent label draws averaged.
      form: ``"minibatch"`` or ``"per_example"``.
      batch_size: examples per chunk for ``"per_example"`` (default 32).
      loop: ``"auto"``, ``"compiled"`` or ``"python"``; see :mod:`nmelab.estimators.loops`.

    Returns:
      An :class:`~nmelab.estimators.probes.Estimate` over the draws; ``num_matvecs`` counts
      gradient evaluations (``num_samples``; per_example: ``num_samples · N`` per-example ones).

    Raises:
      ValueError: for a loss other than cross-entropy, an unknown ``form`` or ``num_samples < 1``.
    """
    _check_cross_entropy(objective)
    probes.check_choice(form, "form", GN_TRACE_FORMS)
    check_inputs(objective, params, batch)
    probes.check_key(key)
    num_samples = probes.check_count(num_samples, "num_samples")
    size = probes.check_batch_size(batch_size, 2 * probes.DEFAULT_BATCH_SIZE)
    python = loops.use_python_loop(loop, params)
    return _gn_trace_sampled(objective, params, batch[0], key, num_samples, form, size, python)


def _label_sample(static: tuple, context: tuple, key: jax.Array) -> jax.Array:
    """One eq. 20 term for labels drawn with ``key`` (a loop step)."""
    objective, form, batch_size, python = static
    params, x, logits = context
    labels = jax.random.categorical(key, logits, axis=-1)
    return gn_trace_from_labels(objective, params, x, labels, form, batch_size, python=python)


@loops.driver(static_argnums=(0, 4, 5, 6))
def _gn_trace_sampled(
    objective: Objective,
    params: Params,
    x,
    key: Key,
    num_samples: int,
    form: str,
    batch_size: int,
    python: bool,
) -> Estimate:
    logits = jax.lax.stop_gradient(objective.outputs(params, x))
    keys = probes.probe_keys(key, num_samples)
    context = (params, x, logits)
    if python and form == "per_example":  # draws one after another, examples in jitted chunks
        static = (objective, form, batch_size, True)
        values = jnp.stack([_label_sample(static, context, k) for k in keys])
    else:
        static = (objective, form, batch_size, False)
        values = loops.map_chunks(_label_sample, static, context, keys, num_samples, 1, python)
    num = jax.tree.leaves(x)[0].shape[0]
    cost = num_samples * (num if form == "per_example" else 1)
    return probes.mean_estimate(values, cost)
