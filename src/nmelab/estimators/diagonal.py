"""The diagonal of a curvature matrix: exact (``P`` unit products) or Hutchinson's ``E[v ⊙ A v]``.

The paper (section 4.3) argues that the NME's *diagonal* is made only of ``φ''`` terms (eq. 11-12):
zero for ReLU, dense for GELU, and sparse and spiky for β-GELU as β grows.
:mod:`nmelab.estimators.diagnostics` summarises such a diagonal.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from nmelab.curvature.operator import LinearizedOperator, Operator, check_inputs
from nmelab.estimators import loops, probes
from nmelab.estimators.probes import Estimate, SplitEstimate
from nmelab.objective import Objective
from nmelab.types import Batch, Key, Params

__all__ = ["check_unit_batch", "diagonal", "diagonal_split", "exact_diagonal_flat"]


def diagonal(
    op: Operator,
    key: Key | None = None,
    num_probes: int | None = None,
    *,
    exact: bool = False,
    probe: str = "rademacher",
    batch_size: int | None = None,
    loop: str = "auto",
) -> Estimate:
    """The diagonal of ``A``, exactly or by Hutchinson's estimator ``diag(A) = E[v ⊙ A v]``.

    Hutchinson (Bekas et al. 2007): for probes with ``E[v vᵀ] = I`` and independent entries,
    ``E[v_i (A v)_i] = A_ii``. Per entry the variance is ``Σ_{j≠i} A_ij²`` for Rademacher probes
    (the diagonal itself contributes nothing, since ``v_i² = 1``) and ``2A_ii² + Σ_{j≠i} A_ij²`` for
    Gaussian ones. The stderr is per entry, ``std/√n`` from the samples, accumulated chunk by chunk
    (Chan's parallel update) so memory stays ``O(batch_size · P)`` whatever ``num_probes``.

    Exact: ``A_ii = e_iᵀ A e_i`` for the ``P`` unit vectors, ``batch_size`` at a time (default 64);
    the H/GN/NME operators use the forward-only quadratic forms of
    :func:`nmelab.estimators.probes.quadratic_form_fn`. Only for small models: ``P`` products.

    Trap: Hutchinson's *diagonal* is much noisier than its *trace*: the per-entry variance is the
    whole off-diagonal row mass, so a sparse diagonal (the β-GELU NME) drowns in noise unless the
    off-diagonal is small. Use ``exact=True`` for sparsity statistics on small models.

    Args:
      op: a symmetric nmelab operator.
      key: the random key (unused and may be ``None`` when ``exact``).
      num_probes: Hutchinson probes (ignored when ``exact``).
      exact: compute the exact diagonal with ``P`` unit products.
      probe: ``"rademacher"`` or ``"gaussian"``.
      batch_size: probes (or unit vectors) evaluated together per chunk; default 16 (exact: 64).
      loop: ``"auto"``, ``"compiled"`` or ``"python"``; see :mod:`nmelab.estimators.loops`.

    Returns:
      An :class:`~nmelab.estimators.probes.Estimate` whose ``value`` and ``stderr`` are pytrees like
      ``op.params`` (``stderr`` is zero when exact); ``samples`` is ``None``.

    Raises:
      TypeError: for a non-operator, a missing key or a non-integer count.
      ValueError: for ``num_probes < 1``, an unknown probe or a non-positive ``batch_size``.
    """
    probes.check_operator(op)
    python = loops.use_python_loop(loop, op.params)
    if exact:
        size = check_unit_batch(op, batch_size)
        return _exact_diagonal(op, size, python)
    num_probes, size = probes.check_probe_arguments(op, key, num_probes, probe, batch_size)
    return _hutchinson_diagonal(op, key, num_probes, probe, min(size, num_probes), python)


def check_unit_batch(op: Operator, batch_size: int | None) -> int:
    """The chunk size for ``P`` unit products (default :data:`probes.DEFAULT_UNIT_BATCH_SIZE`)."""
    size = probes.check_batch_size(batch_size, probes.DEFAULT_UNIT_BATCH_SIZE)
    return min(size, op.num_params)


def _unit_form(_: None, op: Operator, i: jax.Array) -> jax.Array:
    """``e_iᵀ A e_i``."""
    num, dtype = probes.flat_size_and_dtype(op.params)
    unravel = ravel_pytree(op.params)[1]
    return probes.quadratic_form_fn(op)(unravel(jnp.zeros(num, dtype).at[i].set(1)))


def exact_diagonal_flat(op: Operator, batch_size: int, python: bool = False) -> jax.Array:
    """The raveled exact diagonal ``(e_iᵀ A e_i)_i`` (inside ``jit`` unless ``python``)."""
    num, _ = probes.flat_size_and_dtype(op.params)
    context = probes.form_context(op)
    return loops.map_chunks(_unit_form, None, context, jnp.arange(num), num, batch_size, python)


@loops.driver(static_argnums=(1,))
def _exact_diagonal(op: Operator, batch_size: int, python: bool) -> Estimate:
    _, unravel = ravel_pytree(op.params)
    flat = exact_diagonal_flat(op, batch_size, python)
    return Estimate(unravel(flat), unravel(jnp.zeros_like(flat)), int(flat.size))


def _diagonal_chunk(probe: str, lin: LinearizedOperator, carry: tuple, chunk: tuple):
    """Chan's parallel update of the running (count, mean, M2) with one chunk of probes."""
    num, dtype = probes.flat_size_and_dtype(lin.params)
    count_a, mean_a, m2_a = carry
    chunk_keys, chunk_mask = chunk

    def sample(k: jax.Array) -> jax.Array:
        v = probes.sample_flat_probe(k, num, dtype, probe)
        return v * probes.flat_product(lin, v)

    weights = chunk_mask.astype(dtype)[:, None]
    samples = jax.vmap(sample)(chunk_keys)
    count_b = jnp.sum(weights)
    mean_b = jnp.sum(weights * samples, axis=0) / count_b
    m2_b = jnp.sum(weights * (samples - mean_b) ** 2, axis=0)
    count = count_a + count_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (count_b / count)
    m2 = m2_a + m2_b + delta**2 * (count_a * count_b / count)
    return (count, mean, m2), None


@loops.driver(static_argnums=(2, 3, 4))
def _hutchinson_diagonal(
    op: Operator, key: Key, num_probes: int, probe: str, batch_size: int, python: bool
) -> Estimate:
    num, dtype = probes.flat_size_and_dtype(op.params)
    _, unravel = ravel_pytree(op.params)
    num_chunks = -(-num_probes // batch_size)
    keys = probes.probe_keys(key, num_probes)
    # Pad to whole chunks with repeated keys; the padding is masked out of the statistics.
    padded = jnp.concatenate([keys, keys[: num_chunks * batch_size - num_probes]])
    padded = padded.reshape(num_chunks, batch_size, *keys.shape[1:])
    mask = (jnp.arange(num_chunks * batch_size) < num_probes).reshape(num_chunks, batch_size)
    init = (jnp.zeros((), dtype), jnp.zeros(num, dtype), jnp.zeros(num, dtype))
    (_, mean, m2), _ = loops.scan(
        _diagonal_chunk, probe, op.linearize(), init, (padded, mask), python
    )
    if num_probes > 1:
        stderr = jnp.sqrt(m2 / (num_probes - 1) / num_probes)
    else:
        stderr = jnp.full_like(mean, jnp.nan)
    return Estimate(unravel(mean), unravel(stderr), num_probes)


def diagonal_split(
    objective: Objective,
    params: Params,
    batch: Batch,
    *,
    batch_size: int | None = None,
    loop: str = "auto",
) -> SplitEstimate:
    """The exact diagonals of ``H``, ``GN`` and ``NME`` together, from ``P`` forward-only forms.

    ``e_iᵀGNe_i = (Je_i)ᵀH_z(Je_i)`` and ``e_iᵀNMEe_i = ∇_zL · e_iᵀ∇²_θz e_i`` come from one
    second-order forward pass along each unit vector (:func:`probes.split_forms_fn`), and
    ``diag H = diag GN + diag NME`` entry by entry. One compilation and one sweep instead of three.
    Small models only (``P`` passes, ``batch_size`` at a time, default 64). ``loop``: see
    :mod:`nmelab.estimators.loops`.

    Returns:
      A :class:`~nmelab.estimators.probes.SplitEstimate` of exact diagonals (pytrees like
      ``params``, zero stderr).
    """
    check_inputs(objective, params, batch)
    num = sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree.leaves(params))
    size = min(probes.check_batch_size(batch_size, probes.DEFAULT_UNIT_BATCH_SIZE), num)
    python = loops.use_python_loop(loop, params)
    return _diagonal_split(objective, params, tuple(batch), size, python)


def _split_unit_forms(objective: Objective, context: tuple, i: jax.Array):
    """``(e_iᵀHe_i, e_iᵀGNe_i, e_iᵀNMEe_i)`` from one second-order forward pass."""
    params, batch = context
    num, dtype = probes.flat_size_and_dtype(params)
    unit = ravel_pytree(params)[1](jnp.zeros(num, dtype).at[i].set(1))
    return probes.split_forms_fn(objective, params, batch)(unit)


@loops.driver(static_argnums=(0, 3))
def _diagonal_split(
    objective: Objective, params: Params, batch: Batch, batch_size: int, python: bool
) -> SplitEstimate:
    num, _ = probes.flat_size_and_dtype(params)
    _, unravel = ravel_pytree(params)
    diagonals = loops.map_chunks(
        _split_unit_forms, objective, (params, batch), jnp.arange(num), num, batch_size, python
    )
    return SplitEstimate(
        *(Estimate(unravel(d), unravel(jnp.zeros_like(d)), num) for d in diagonals)
    )
