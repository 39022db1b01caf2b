"""Extreme eigenpairs by Lanczos with partial reorthogonalization (Simon 1984), in JAX.

The operator is linearized once (:meth:`~nmelab.curvature.CurvatureOperator.linearize`) and every
step applies only its linear part. Vectors stay pytrees shaped like the params (the basis holds one
``(m+1, *leaf.shape)`` array per leaf; dot products sum over leaves); models with at most
:data:`FLAT_MAX_PARAMS` parameters work on raveled vectors instead. The Lanczos basis is kept, so
memory is ``(m+1)·P`` floats.

The steps run as one ``lax.scan`` inside ``jit``, or as a Python loop over one jitted step for
convolutional models on CPU (:mod:`nmelab.estimators.loops`); both run the same step.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from nmelab import _tree
from nmelab.curvature.operator import LinearizedOperator, Operator
from nmelab.estimators import loops, probes
from nmelab.types import Key, PyTree

__all__ = [
    "WHICH",
    "Eigenpairs",
    "check_num_iters",
    "eigenpairs",
    "initial_state",
    "lanczos_tridiagonal",
    "operator_space",
    "run_lanczos",
    "space_product",
    "tridiagonal_matrix",
]

WHICH: tuple[str, ...] = ("largest", "smallest", "both")

BREAKDOWN_TOLERANCE = 100.0
"""A step breaks down when ``β_j <= BREAKDOWN_TOLERANCE · eps · ‖T‖`` (invariant subspace found)."""

FLAT_MAX_PARAMS = 2**18
"""Up to this many parameters Lanczos runs on raveled vectors (one leaf: a smaller program that
compiles several times faster); above it on pytrees (no ravel/unravel per step)."""

_REORTHOGONALIZE_AGAIN = 0.7071067811865476
"""Kahan-Parlett / DGKS: a second Gram-Schmidt pass when one pass removes more than 1 − 1/√2."""


@dataclasses.dataclass(frozen=True)
class Eigenpairs:
    """Ritz approximations of eigenpairs of a symmetric operator. A pytree.

    Attributes:
      eigenvalues: ``(k,)`` Ritz values in ascending order.
      eigenvectors: a pytree like the params whose leaves have a leading axis ``k``; entry ``i`` is
        the unit-norm Ritz vector of ``eigenvalues[i]`` (sign arbitrary).
      residual_norms: ``(k,)`` ``‖A y_i − θ_i y_i‖`` from the Lanczos relation (see
        :func:`eigenpairs`), without further products, to relative ``O(m·√eps)``. For a
        symmetric ``A`` some eigenvalue lies within this distance of ``θ_i``.
      num_matvecs: products used: the ``num_iters`` Lanczos steps.
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


# --------------------------------------------------------------------------------------------
# The operator in the space Lanczos works in
# --------------------------------------------------------------------------------------------


def operator_space(op: Operator) -> tuple[LinearizedOperator, str]:
    """``(lin, space)``: ``op`` linearized once, and ``"flat"`` (raveled) or ``"tree"`` vectors.

    Small models (``P <= FLAT_MAX_PARAMS``) work on raveled vectors, large ones on pytrees; see
    :data:`FLAT_MAX_PARAMS`. Inside ``jit`` the linearization is traced; eagerly it is one jitted
    call whose residuals every later product reuses.
    """
    return op.linearize(), ("flat" if op.num_params <= FLAT_MAX_PARAMS else "tree")


def space_product(space: str, lin: LinearizedOperator, u: PyTree) -> PyTree:
    """``A u`` for a vector ``u`` of ``space`` (``"flat"``: a raveled ``(P,)`` array)."""
    if space == "flat":
        return probes.flat_product(lin, u)
    return lin.mv(u)


def to_space(space: str, tree: PyTree) -> PyTree:
    """A params-shaped pytree as a vector of ``space``."""
    return probes.flatten(tree) if space == "flat" else tree


def from_space(space: str, params: PyTree, u: PyTree) -> PyTree:
    """A vector of ``space`` as a params-shaped pytree."""
    return ravel_pytree(params)[1](u) if space == "flat" else u


# --------------------------------------------------------------------------------------------
# The Lanczos recurrence with partial reorthogonalization
# --------------------------------------------------------------------------------------------


class _State(NamedTuple):
    basis: PyTree  # (m+1, ...) per leaf; rows > j are zero
    v_prev: PyTree
    v: PyTree
    alphas: jax.Array  # (m,)
    betas: jax.Array  # (m,)
    anorm: jax.Array  # running estimate of ‖T‖
    omega_prev: jax.Array  # (m+1,) estimates of ⟨v_{j-1}, v_k⟩
    omega: jax.Array  # (m+1,) estimates of ⟨v_j, v_k⟩
    force: jax.Array  # reorthogonalize the next vector fully (Simon: always in pairs)
    num_full: jax.Array  # full Gram-Schmidt passes so far (diagnostic)
    discarded: jax.Array  # (m+1, m) full-pass coefficients beyond T: A V_m = V_{m+1} (T̄ + this)


def _orthogonalize(w: PyTree, basis: PyTree, mask: jax.Array) -> tuple[PyTree, jax.Array]:
    coef = mask * _rows_dot(basis, w)
    return _axpy(-1.0, _combine(coef, basis), w), coef


def _full_pass(w: PyTree, basis: PyTree, mask: jax.Array) -> tuple[PyTree, jax.Array]:
    """Classical Gram-Schmidt of ``w`` against the rows in ``mask``, twice when needed (DGKS).

    A second pass runs when the first removed more than ``1 − 1/√2`` of ``‖w‖`` ("twice is
    enough"). The passes are a ``while_loop`` over one copy of the pass, which keeps the compiled
    step small. Returns ``(w, coefficients summed over the passes)``.
    """

    def again(carry):
        _, _, norm_before, norm_after, passes = carry
        return (passes == 0) | ((passes == 1) & (norm_after < _REORTHOGONALIZE_AGAIN * norm_before))

    def one_pass(carry):
        w, coef, _, norm, passes = carry
        w, extra = _orthogonalize(w, basis, mask)
        return w, coef + extra, norm, _tree.tree_norm(w), passes + 1

    norm = _tree.tree_norm(w)
    init = (w, jnp.zeros_like(mask), norm, norm, jnp.zeros((), jnp.int32))
    w, coef, _, _, _ = jax.lax.while_loop(again, one_pass, init)
    return w, coef


def _omega_next(state: _State, j: jax.Array, alpha, beta, beta_prev, eps) -> jax.Array:
    """Simon's recurrence for ``ω_{j+1,k} ≈ ⟨v_{j+1}, v_k⟩``, ``k < j`` (exact in exact arithmetic).

    From ``β_j v_{j+1} = A v_j − α_j v_j − β_{j−1} v_{j−1}`` and the same relation at ``k``::

        β_j ω_{j+1,k} = β_k ω_{j,k+1} + (α_k − α_j) ω_{j,k} + β_{k−1} ω_{j,k−1} − β_{j−1} ω_{j−1,k}

    plus a rounding term ``± 2·eps·‖T‖`` (sign of the rest, so the estimate never shrinks by luck).
    """
    omega, omega_prev = state.omega, state.omega_prev
    rows = omega.shape[0]
    zero = jnp.zeros((1,), omega.dtype)
    a = jnp.concatenate([state.alphas, zero])
    b = jnp.concatenate([state.betas, zero])
    b_before = jnp.concatenate([zero, b[:-1]])  # β_{k−1}
    omega_after = jnp.concatenate([omega[1:], zero])  # ω_{j,k+1}
    omega_before = jnp.concatenate([zero, omega[:-1]])  # ω_{j,k−1}
    rest = b * omega_after + (a - alpha) * omega + b_before * omega_before - beta_prev * omega_prev
    rest = rest + jnp.where(rest >= 0, 1.0, -1.0) * 2 * eps * state.anorm
    safe = jnp.where(beta > 0, beta, 1.0)
    return jnp.where(jnp.arange(rows) < j, rest / safe, 0.0)


def _lanczos_step(static: tuple[str], context: tuple, state: _State, j: jax.Array):
    """One Lanczos step (``j`` is a traced index, so one compiled step serves every ``j``)."""
    (space,) = static
    lin, key = context
    dtype = state.alphas.dtype
    eps = jnp.finfo(dtype).eps
    rows = state.omega.shape[0]
    beta_prev = jnp.where(j > 0, state.betas[jnp.maximum(j - 1, 0)], 0.0)
    w = _axpy(-beta_prev, state.v_prev, space_product(space, lin, state.v))
    alpha = _tree.tree_vdot(state.v, w)
    w = _axpy(-alpha, state.v, w)
    # Local reorthogonalization against v_j (one more dot): keeps ⟨v_{j+1}, v_j⟩ at rounding level.
    correction = _tree.tree_vdot(state.v, w)
    w = _axpy(-correction, state.v, w)
    alpha = alpha + correction
    beta = _tree.tree_norm(w)
    anorm = jnp.maximum(state.anorm, jnp.abs(alpha) + beta + beta_prev)
    state = state._replace(alphas=state.alphas.at[j].set(alpha), anorm=anorm)
    omega_next = _omega_next(state, j, alpha, beta, beta_prev, eps)
    mask = (jnp.arange(rows) <= j).astype(dtype)
    lost = jnp.max(jnp.abs(omega_next)) > jnp.sqrt(eps)
    full = state.force | lost

    def reorthogonalize(w):
        return _full_pass(w, state.basis, mask)

    w, coef = jax.lax.cond(full, reorthogonalize, lambda w: (w, jnp.zeros_like(mask)), w)
    alpha = alpha + coef[j]
    # The coefficients on v_k, k < j, leave T: keep them so residuals account for them.
    discarded = state.discarded.at[:, j].set(jnp.where(jnp.arange(rows) < j, coef, 0.0))
    beta = jnp.where(full, _tree.tree_norm(w), beta)
    omega_next = jnp.where(full, jnp.where(jnp.arange(rows) < j, eps, 0.0), omega_next)
    broken = beta <= BREAKDOWN_TOLERANCE * eps * anorm

    def restart(_):
        r = probes.sample_probe(jax.random.fold_in(key, j), state.v, "gaussian")
        r, _ = _full_pass(r, state.basis, mask)
        norm = _tree.tree_norm(r)
        scale = jnp.where(norm > jnp.sqrt(eps), 1 / jnp.where(norm > 0, norm, 1), 0.0)
        return jax.tree.map(lambda leaf: leaf * scale.astype(leaf.dtype), r)

    def proceed(_):
        inv = 1 / jnp.where(beta > 0, beta, 1)
        return jax.tree.map(lambda leaf: leaf * inv.astype(leaf.dtype), w)

    nxt = jax.lax.cond(broken, restart, proceed, None)
    omega_next = jnp.where(broken, jnp.where(jnp.arange(rows) <= j, eps, 0.0), omega_next)
    omega_next = omega_next.at[j].set(eps).at[j + 1].set(1.0)
    return (
        _State(
            basis=jax.tree.map(lambda b, x: b.at[j + 1].set(x), state.basis, nxt),
            v_prev=state.v,
            v=nxt,
            alphas=state.alphas.at[j].set(alpha),
            betas=state.betas.at[j].set(jnp.where(broken, 0.0, beta)),
            anorm=anorm,
            omega_prev=state.omega,
            omega=omega_next,
            force=full & ~state.force & ~broken,
            num_full=state.num_full + full.astype(jnp.int32),
            discarded=discarded,
        ),
        None,
    )


def lanczos_tridiagonal(
    lin: LinearizedOperator,
    space: str,
    v0: PyTree,
    num_iters: int,
    key: Key,
    *,
    python: bool = False,
) -> tuple[jax.Array, jax.Array, PyTree]:
    """Run ``m = num_iters`` Lanczos steps on ``lin`` from the unit vector ``v0`` of ``space``.

    Step ``j``: ``w = A v_j − β_{j−1} v_{j−1}``, ``α_j = v_jᵀw``, ``w ← w − α_j v_j`` (twice: local
    reorthogonalization), ``β_j = ‖w‖``, ``v_{j+1} = w/β_j``.

    Partial reorthogonalization (Simon 1984): in floating point the Lanczos vectors lose
    orthogonality as Ritz values converge. The recurrence of :func:`_omega_next` tracks an estimate
    ``ω_{j+1,k}`` of ``⟨v_{j+1}, v_k⟩`` at the cost of ``O(m)`` scalars; only when some
    ``|ω| > √eps`` is ``w`` orthogonalized against the whole basis (classical Gram-Schmidt, a
    second pass when the first removed more than ``1 − 1/√2`` of ``‖w‖``), and then the next vector
    too. Semi-orthogonality (``|⟨v_i, v_k⟩| <= √eps``) is enough for ``T`` to be the Rayleigh
    quotient of ``A`` on an orthonormal basis to ``O(eps‖A‖)`` (Simon 1984), so its eigenvalues are
    Rayleigh-Ritz values to working accuracy; a full pass reads the whole basis twice, so most steps
    now cost one product and a few vector operations.

    Breakdown: when ``β_j <= 100·eps·‖T‖`` the Krylov space is invariant. The iteration then restarts
    from a random vector orthogonal to ``V`` and records ``β_j = 0``; ``T`` becomes block-diagonal,
    so eigenvalues beyond the first Krylov space (multiplicities, clusters) are found and, for SLQ,
    the new blocks get zero quadrature weight (``e_1`` lives in the first block). When ``V`` already
    spans everything the restart vector is zero.

    Args:
      lin: the linearized operator.
      space: ``"flat"`` (``v0`` is a raveled ``(P,)`` array) or ``"tree"`` (a params pytree).
      v0: the unit starting vector.
      num_iters: ``m <= P``.
      key: key for restart vectors (``fold_in(key, j)`` at step ``j``).
      python: loop in Python over one jitted step (convolutional models on CPU) rather than
        ``lax.scan`` (:mod:`nmelab.estimators.loops`); call inside ``jit`` only when false.

    Returns:
      ``(alphas (m,), betas (m,), V)``: the diagonal of ``T``, its off-diagonal in ``betas[:m-1]``
      (``betas[m-1]`` couples to the unused ``v_m``), and the Lanczos vectors as a pytree whose
      leaves have a leading axis ``m+1``.
    """
    state = run_lanczos(lin, space, v0, num_iters, key, python=python)
    return state.alphas, state.betas, state.basis


def initial_state(v0: PyTree, num_iters: int) -> _State:
    """The recurrence's state before step 0, from the unit vector ``v0``."""
    dtype = jnp.result_type(*jax.tree.leaves(v0))
    rows = num_iters + 1
    return _State(
        basis=jax.tree.map(lambda leaf: jnp.zeros((rows, *leaf.shape), dtype).at[0].set(leaf), v0),
        v_prev=jax.tree.map(jnp.zeros_like, v0),
        v=jax.tree.map(jnp.copy, v0),
        alphas=jnp.zeros(num_iters, dtype),
        betas=jnp.zeros(num_iters, dtype),
        anorm=jnp.zeros((), dtype),
        omega_prev=jnp.zeros(rows, dtype),
        omega=jnp.zeros(rows, dtype).at[0].set(1.0),
        force=jnp.zeros((), bool),
        num_full=jnp.zeros((), jnp.int32),
        discarded=jnp.zeros((rows, num_iters), dtype),
    )


def run_lanczos(
    lin: LinearizedOperator, space: str, v0: PyTree, num_iters: int, key: Key, *, python: bool
) -> _State:
    """The state after the steps of :func:`lanczos_tridiagonal` (same arguments)."""
    state = initial_state(v0, num_iters)
    state, _ = loops.scan(_lanczos_step, (space,), (lin, key), state, jnp.arange(num_iters), python)
    return state


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
    loop: str = "auto",
) -> Eigenpairs:
    """The ``k`` extreme eigenpairs of a symmetric operator by Lanczos with partial reorthogonalization.

    Runs ``m = min(num_iters, P)`` Lanczos steps on the operator, linearized once (see
    :func:`lanczos_tridiagonal`), takes the eigenpairs ``(θ, s)`` of the tridiagonal ``T`` and
    returns the Ritz pairs ``(θ_i, y_i = V s_i / ‖V s_i‖)`` at the chosen end of the spectrum.
    Extreme eigenvalues converge first; interior ones need ``m`` close to ``P``. With ``m = P`` all
    eigenvalues are exact to rounding (semi-orthogonality keeps ``T`` a Rayleigh quotient on an
    orthonormal basis to ``O(eps‖A‖)``).

    Residuals cost no product. The recurrence satisfies ``A V_m = V_{m+1} H`` to rounding, where
    ``H`` is ``T`` with the row ``β_m e_mᵀ`` appended plus the Gram-Schmidt coefficients that full
    passes removed from ``w_j`` (kept in the state), so ``A y_i − θ_i y_i = V_{m+1}(H s_i − θ_i
    [s_i; 0]) / ‖V_m s_i‖``, whose norm is that of the small vector to relative ``O(m·√eps)``
    (semi-orthogonality). Trap: ARPACK's shortcut ``|β_m s_{m,i}|`` drops those coefficients and
    can report 0 where the true residual is ``√eps‖A‖``; the tests compare the reported norms with
    ``‖A y − θ y‖`` from dense matrices.

    Cost: ``m`` products of the linearized operator (each about 0.8-1.7 gradients) plus a full
    Gram-Schmidt pass over the basis only on the steps where orthogonality is estimated lost.

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
      loop: ``"auto"``, ``"compiled"`` or ``"python"``; see :mod:`nmelab.estimators.loops`.

    Returns:
      An :class:`Eigenpairs` (``num_matvecs = m``).

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
    python = loops.use_python_loop(loop, op.params)
    return _eigenpairs(op, key, k, which, num_iters, python)


@loops.driver(static_argnums=(2, 3, 4))
def _eigenpairs(
    op: Operator, key: Key, k: int, which: str, num_iters: int, python: bool
) -> Eigenpairs:
    lin, space = operator_space(op)
    start_key, restart_key = jax.random.split(key)
    v0, _ = _tree.tree_normalize(
        to_space(space, probes.sample_probe(start_key, op.params, "gaussian"))
    )
    state = run_lanczos(lin, space, v0, num_iters, restart_key, python=python)
    m = num_iters
    t = tridiagonal_matrix(state.alphas, state.betas)
    theta, vectors = jnp.linalg.eigh(t)
    index = jnp.asarray(_selection(which, k, m))
    coef = vectors[:, index]  # (m, k): s_i in columns
    combined = jax.tree.map(
        lambda b: jnp.tensordot(coef.T.astype(b.dtype), b[:m], axes=1), state.basis
    )
    ritz, norms = jax.vmap(_tree.tree_normalize)(combined)
    # A V_m = V_{m+1} H with H = [T; β_m e_mᵀ] + the discarded full-pass coefficients, so
    # A y_i − θ_i y_i = V_{m+1} (H s_i − θ_i [s_i; 0]) / ‖V_m s_i‖ (V semi-orthonormal).
    last_row = jnp.zeros((1, m), t.dtype).at[0, m - 1].set(state.betas[m - 1])
    h = jnp.concatenate([t, last_row]) + state.discarded
    padded = jnp.concatenate([coef, jnp.zeros((1, k), coef.dtype)])
    residuals = jnp.linalg.norm(h @ coef - padded * theta[index], axis=0) / norms
    eigenvectors = jax.vmap(lambda y: from_space(space, op.params, y))(ritz)
    return Eigenpairs(theta[index], eigenvectors, residuals, m)
