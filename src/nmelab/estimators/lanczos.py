"""Extreme eigenpairs by Lanczos with full reorthogonalization, in JAX (``jit`` + ``lax.scan``).

The operator is linearized once (:meth:`~nmelab.curvature.CurvatureOperator.linearize`) and every
iteration applies only its linear part. Vectors stay pytrees shaped like the params (the basis holds
one ``(m+1, *leaf.shape)`` array per leaf; dot products sum over leaves), which on XLA:CPU is
measurably cheaper than raveling with :func:`jax.flatten_util.ravel_pytree` at every step. The
Lanczos basis is kept, so memory is ``(m+1)·P`` floats.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from nmelab.curvature.operator import Operator
from nmelab.estimators import probes
from nmelab.types import Key, PyTree

WHICH: tuple[str, ...] = ("largest", "smallest", "both")

BREAKDOWN_TOLERANCE = 100.0
"""A step breaks down when ``β_j <= BREAKDOWN_TOLERANCE · eps · ‖T‖`` (invariant subspace found)."""

FLAT_MAX_PARAMS = 2**18
"""Up to this many parameters Lanczos runs on raveled vectors (one leaf: a smaller program that
compiles several times faster); above it on pytrees (no ravel/unravel per step)."""

SEGMENTED_ABOVE = 2**22
"""Bases of more floats than this are built in ``DEFAULT_SEGMENTS`` scan segments."""

DEFAULT_SEGMENTS = 4

_REORTHOGONALIZE_AGAIN = 0.7071067811865476
"""Kahan-Parlett / DGKS: a second Gram-Schmidt pass when one pass removes more than 1 − 1/√2."""


@dataclasses.dataclass(frozen=True)
class Eigenpairs:
    """Ritz approximations of eigenpairs of a symmetric operator. A pytree.

    Attributes:
      eigenvalues: ``(k,)`` Ritz values in ascending order.
      eigenvectors: a pytree like the params whose leaves have a leading axis ``k``; entry ``i`` is
        the unit-norm Ritz vector of ``eigenvalues[i]`` (sign arbitrary).
      residual_norms: ``(k,)`` ``‖A y_i − θ_i y_i‖`` computed with ``k`` actual products. For a
        symmetric ``A`` some eigenvalue lies within this distance of ``θ_i``.
      num_matvecs: products used: ``num_iters`` Lanczos steps plus ``k`` for the residuals.
    """

    eigenvalues: jax.Array
    eigenvectors: Any
    residual_norms: jax.Array
    num_matvecs: int

    def eigenvector(self, i: int) -> Any:
        """The ``i``-th Ritz vector as a pytree like the params."""
        return jax.tree.map(lambda leaf: leaf[i], self.eigenvectors)


jax.tree_util.register_dataclass(
    Eigenpairs,
    data_fields=["eigenvalues", "eigenvectors", "residual_norms"],
    meta_fields=["num_matvecs"],
)


def _rows_dot(basis: PyTree, w: PyTree) -> jax.Array:
    """``(V w)_i = Σ_leaves ⟨V_i, w⟩`` for a basis whose leaves carry a leading row axis."""
    return sum(
        jnp.tensordot(b, x, axes=x.ndim)
        for b, x in zip(jax.tree.leaves(basis), jax.tree.leaves(w), strict=True)
    )


def _combine(coef: jax.Array, basis: PyTree) -> PyTree:
    """``Σ_i coef_i V_i`` as a pytree like one row of ``basis``."""
    return jax.tree.map(lambda b: jnp.tensordot(coef.astype(b.dtype), b, axes=1), basis)


def _axpy(a: jax.Array, x: PyTree, y: PyTree) -> PyTree:
    """``a x + y`` leaf by leaf."""
    return jax.tree.map(lambda xi, yi: (a * xi + yi).astype(yi.dtype), x, y)


def _norm(w: PyTree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(w)))


def normalize(v: PyTree) -> PyTree:
    """``v / ‖v‖`` for a pytree (Euclidean norm over all leaves)."""
    norm = _norm(v)
    return jax.tree.map(lambda leaf: leaf / norm.astype(leaf.dtype), v)


def _row(basis: PyTree, j: jax.Array) -> PyTree:
    return jax.tree.map(lambda b: jax.lax.dynamic_index_in_dim(b, j, keepdims=False), basis)


def lanczos_tridiagonal(
    matvec: Callable[[PyTree], PyTree],
    v0: PyTree,
    num_iters: int,
    key: Key,
    *,
    num_segments: int | None = None,
) -> tuple[jax.Array, jax.Array, PyTree]:
    """Run ``m = num_iters`` Lanczos steps from the unit vector ``v0`` (call inside ``jit``).

    Step ``j``: ``w = A v_j − β_{j−1} v_{j−1}``, ``α_j = v_jᵀw``, ``w ← w − α_j v_j``, then one full
    Gram-Schmidt pass against every stored ``v_i`` (a second when the first removed more than
    ``1 − 1/√2`` of ``‖w‖``: "twice is enough"), ``β_j = ‖w‖``, ``v_{j+1} = w/β_j``. With full
    reorthogonalization ``T = VᵀAV`` to rounding, so its eigenvalues are Rayleigh-Ritz values.

    Breakdown: when ``β_j <= 100·eps·‖T‖`` the Krylov space is invariant. The iteration then restarts
    from a random vector orthogonal to ``V`` and records ``β_j = 0``; ``T`` becomes block-diagonal
    and still equals ``VᵀAV``, so eigenvalues beyond the first Krylov space (multiplicities,
    clusters) are found and, for SLQ, the new blocks get zero quadrature weight (``e_1`` lives in the
    first block). When ``V`` already spans everything the restart vector is zero.

    Vectors are pytrees (a raveled ``(P,)`` array is a one-leaf pytree): the basis keeps one
    ``(m+1, *leaf.shape)`` array per leaf, so no step ravels or unravels. On XLA:CPU raveling a
    1.86M-entry pytree and back cost about half a gradient per step.

    Full reorthogonalization reads the whole basis twice per step, which on a CPU is memory-bound
    (for ``m = 20`` and 1.86M parameters, 156 MB per pass). The steps are therefore split into
    ``num_segments`` ``lax.scan`` segments, each carrying only the prefix of the basis it can reach,
    so the passes skip rows not yet filled (about 35% less traffic with 4 segments). Each segment
    compiles its own copy of the step, so small problems use one segment.

    Args:
      matvec: ``u -> A u`` on pytrees shaped like ``v0``.
      v0: the unit starting vector (a pytree of floating arrays).
      num_iters: ``m <= P``.
      key: key for restart vectors (``fold_in(key, j)`` at step ``j``).
      num_segments: scan segments; default 4 when the basis exceeds ``SEGMENTED_ABOVE`` floats,
        else 1.

    Returns:
      ``(alphas (m,), betas (m,), V)``: the diagonal of ``T``, its off-diagonal in ``betas[:m-1]``
      (``betas[m-1]`` couples to the unused ``v_m``), and the Lanczos vectors as a pytree whose
      leaves have a leading axis ``m+1``.
    """
    dtype = jnp.result_type(*jax.tree.leaves(v0))
    eps = jnp.finfo(dtype).eps
    if num_segments is None:
        size = sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree.leaves(v0))
        large = (num_iters + 1) * size > SEGMENTED_ABOVE
        num_segments = min(DEFAULT_SEGMENTS, num_iters) if large else 1
    num_segments = max(1, min(num_segments, num_iters))

    def orthogonalize(w, basis, mask):
        coef = mask * _rows_dot(basis, w)
        return _axpy(-1.0, _combine(coef, basis), w), coef

    def full_pass(w, basis, mask):
        w1, coef = orthogonalize(w, basis, mask)

        def again(args):
            w1, coef = args
            w2, coef2 = orthogonalize(w1, basis, mask)
            return w2, coef + coef2

        return jax.lax.cond(
            _norm(w1) < _REORTHOGONALIZE_AGAIN * _norm(w), again, lambda args: args, (w1, coef)
        )

    def restart(args):
        basis, mask, j, _ = args
        r = probes.sample_probe(jax.random.fold_in(key, j), v0, "gaussian")
        r, _ = orthogonalize(r, basis, mask)
        r, _ = orthogonalize(r, basis, mask)
        norm = _norm(r)
        scale = jnp.where(norm > jnp.sqrt(eps), 1 / jnp.where(norm > 0, norm, 1), 0.0)
        return jax.tree.map(lambda leaf: leaf * scale.astype(leaf.dtype), r)

    def proceed(args):
        _, _, _, (w, beta) = args
        inv = 1 / jnp.where(beta > 0, beta, 1)
        return jax.tree.map(lambda leaf: leaf * inv.astype(leaf.dtype), w)

    def step(carry, j):
        basis, v_prev, v, alphas, betas, anorm = carry
        num_rows = jax.tree.leaves(basis)[0].shape[0]
        mask = (jnp.arange(num_rows) <= j).astype(dtype)
        beta_prev = jnp.where(j > 0, betas[j - 1], 0.0)
        w = _axpy(-beta_prev, v_prev, matvec(v))
        alpha = _rows_dot(jax.tree.map(lambda x: x[None], v), w)[0]
        w = _axpy(-alpha, v, w)
        w, coef = full_pass(w, basis, mask)
        alpha = alpha + coef[j]
        beta = _norm(w)
        anorm = jnp.maximum(anorm, jnp.abs(alpha) + beta + beta_prev)
        broken = beta <= BREAKDOWN_TOLERANCE * eps * anorm
        nxt = jax.lax.cond(broken, restart, proceed, (basis, mask, j, (w, beta)))
        basis = jax.tree.map(lambda b, x: b.at[j + 1].set(x), basis, nxt)
        alphas = alphas.at[j].set(alpha)
        betas = betas.at[j].set(jnp.where(broken, 0.0, beta))
        return (basis, v, nxt, alphas, betas, anorm), None

    # Segments: steps [start, end) only ever touch rows <= end, so each segment's scan carries
    # just that prefix of the basis and the Gram-Schmidt passes read no empty rows beyond it.
    bounds = sorted({round(num_iters * (i + 1) / num_segments) for i in range(num_segments)})
    basis = jax.tree.map(lambda leaf: leaf[None], v0)
    zeros = jax.tree.map(jnp.zeros_like, v0)
    carry = (
        basis,
        zeros,
        v0,
        jnp.zeros(num_iters, dtype),
        jnp.zeros(num_iters, dtype),
        jnp.zeros((), dtype),
    )
    start = 0
    for end in bounds:
        basis = jax.tree.map(
            lambda b, rows=end + 1: (
                jnp.zeros((rows, *b.shape[1:]), b.dtype).at[: b.shape[0]].set(b)
            ),
            carry[0],
        )
        carry, _ = jax.lax.scan(step, (basis, *carry[1:]), jnp.arange(start, end))
        start = end
    basis, _, _, alphas, betas, _ = carry
    return alphas, betas, basis


def operator_space(op: Operator) -> tuple[Callable, Callable, Callable]:
    """``(matvec, to_space, from_space)`` for Lanczos on ``op``, linearized once (inside ``jit``).

    Small models (``P <= FLAT_MAX_PARAMS``) work on raveled vectors, large ones on pytrees; see
    :data:`FLAT_MAX_PARAMS`.
    """
    if op.num_params <= FLAT_MAX_PARAMS:
        _, unravel = ravel_pytree(op.params)
        return probes.flat_matvec_fn(op), probes.flatten, unravel
    lin = op.linearize()
    return lin.mv, (lambda tree: tree), (lambda tree: tree)


def tridiagonal_matrix(alphas: jax.Array, betas: jax.Array) -> jax.Array:
    """The ``m × m`` symmetric tridiagonal ``T`` from ``alphas (m,)`` and ``betas`` (first m−1 used)."""
    off = betas[: alphas.shape[0] - 1]
    return jnp.diag(alphas) + jnp.diag(off, 1) + jnp.diag(off, -1)


def _selection(which: str, k: int, m: int) -> tuple[int, ...]:
    if which == "largest":
        return tuple(range(m - k, m))
    if which == "smallest":
        return tuple(range(k))
    num_small = k // 2
    return tuple(range(num_small)) + tuple(range(m - (k - num_small), m))


def check_num_iters(num_iters: Any, num_params: int) -> int:
    """Validate ``num_iters >= 1`` and cap it at ``P``."""
    return min(probes.check_count(num_iters, "num_iters"), num_params)


def eigenpairs(
    op: Operator,
    k: int = 1,
    which: str = "largest",
    key: Key | None = None,
    num_iters: int | None = None,
    *,
    batch_size: int | None = None,
) -> Eigenpairs:
    """The ``k`` extreme eigenpairs of a symmetric operator by Lanczos with full reorthogonalization.

    Runs ``m = min(num_iters, P)`` Lanczos steps on the linearized operator (one ``jit``, a
    ``lax.scan`` over steps; see :func:`lanczos_tridiagonal`), takes the eigenpairs ``(θ, s)`` of
    the tridiagonal ``T`` and returns the Ritz pairs ``(θ_i, V s_i)`` at the chosen end of the
    spectrum, with residuals ``‖A y − θ y‖`` from ``k`` actual products. Extreme eigenvalues
    converge first; interior ones need ``m`` close to ``P``. With ``m = P`` and full
    reorthogonalization all eigenvalues are exact to rounding.

    ``which``: ``"largest"`` (the ``k`` algebraically largest), ``"smallest"`` (the ``k`` smallest:
    the NME and the Hessian are indefinite, so these are the most negative), or ``"both"`` (ARPACK's
    ``BE``: ``k//2`` smallest and ``k − k//2`` largest). Eigenvalues are always returned in
    ascending order, so ``eigenvalues[-1]`` is ``λ_max`` and ``eigenvalues[0]`` is the smallest.

    Trap: Lanczos finds one copy of a repeated eigenvalue per Krylov space; multiplicities appear
    only through restarts after a breakdown. Ritz values are reliable only up to their residual
    norms (for symmetric ``A``, ``|θ − λ| <= ‖Ay − θy‖`` for some eigenvalue ``λ``).

    Args:
      op: a symmetric nmelab operator.
      k: how many eigenpairs, ``1 <= k <= min(num_iters, P)``.
      which: ``"largest"``, ``"smallest"`` or ``"both"``.
      key: the random key for the starting vector (and restarts).
      num_iters: Lanczos steps ``m``, capped at ``P``; default ``max(30, 3k)`` (capped).
      batch_size: Ritz vectors per chunk for the residual products (default 16).

    Returns:
      An :class:`Eigenpairs` (``num_matvecs = m + k``).

    Raises:
      TypeError: for a non-operator, a missing key or a non-integer ``k``/``num_iters``.
      ValueError: for an unknown ``which``, ``k < 1``, ``k > P``, ``k > num_iters``, or a
        non-symmetric operator.
    """
    probes.check_operator(op)
    probes.check_symmetric(op)
    probes.check_choice(which, "which", WHICH)
    probes.check_key(key)
    num_params = op.num_params
    k = probes.check_count(k, "k")
    if k > num_params:
        raise ValueError(f"k must be <= P = {num_params} (the number of parameters), got {k}")
    if num_iters is None:
        num_iters = max(30, 3 * k)
    num_iters = check_num_iters(num_iters, num_params)
    if k > num_iters:
        raise ValueError(f"k must be <= num_iters = {num_iters}, got k = {k}")
    size = probes.check_batch_size(batch_size, probes.DEFAULT_BATCH_SIZE)
    return _eigenpairs(op, key, k, which, num_iters, size)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _eigenpairs(
    op: Operator, key: Key, k: int, which: str, num_iters: int, batch_size: int
) -> Eigenpairs:
    matvec, to_space, from_space = operator_space(op)
    start_key, restart_key = jax.random.split(key)
    v0 = normalize(to_space(probes.sample_probe(start_key, op.params, "gaussian")))
    alphas, betas, basis = lanczos_tridiagonal(matvec, v0, num_iters, restart_key)
    theta, vectors = jnp.linalg.eigh(tridiagonal_matrix(alphas, betas))
    index = jnp.asarray(_selection(which, k, num_iters))
    values = theta[index]
    coef = vectors[:, index].T  # (k, m)
    ritz = jax.tree.map(lambda b: jnp.tensordot(coef.astype(b.dtype), b[:num_iters], axes=1), basis)

    def residual(args):
        y, value = args
        return _norm(_axpy(-value, y, matvec(y)))

    residuals = probes.chunked_map(residual, (ritz, values), k, batch_size)
    return Eigenpairs(values, jax.vmap(from_space)(ritz), residuals, num_iters + k)
