"""Diagnostics of the NME's structure: diagonal sparsity/spikiness and per-layer block norms.

The paper (section 4.3, eq. 11-14) argues that the NME's diagonal is built from ``φ''`` alone: zero
for ReLU, dense for GELU, and for β-GELU increasingly *sparse and spiky* as β grows (``φ''`` is
``O(β)`` within ``1/β`` of zero and exponentially small elsewhere). :func:`diagonal_statistics`
quantifies that; :func:`block_norms` shows where the mass of an operator lives across layers (for
ReLU MLPs every within-layer block of the NME is exactly zero, App. A.2, while cross-layer blocks
are not).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nmelab import _tree
from nmelab.curvature.operator import Operator
from nmelab.estimators import loops, probes
from nmelab.estimators.probes import Estimate
from nmelab.types import Key, Params, PyTree

__all__ = [
    "EXACT_MAX_PARAMS",
    "GROUPINGS",
    "BlockNorms",
    "DiagonalStatistics",
    "block_norms",
    "diagonal_statistics",
    "param_groups",
]

GROUPINGS: tuple[str, ...] = ("leaf", "layer")

EXACT_MAX_PARAMS = 4096
"""``block_norms(exact=None)`` builds the dense matrix up to this many parameters."""


# --------------------------------------------------------------------------------------------
# Parameter groups
# --------------------------------------------------------------------------------------------


def param_groups(params: Params, by: str = "layer") -> list[tuple[str, np.ndarray]]:
    """The parameter groups and their indices in :func:`jax.flatten_util.ravel_pytree` order.

    ``by="layer"``: leaves grouped by :func:`nmelab._tree.layer_names` (the one naming scheme:
    ``[{"w", "b"}, ...]`` gives layers ``"0"``, ``"1"``; flax gives ``"params/Dense_0"``; a leaf
    at the root is its own group). ``by="leaf"``: one group per leaf, named by its whole key path
    (``"0/w"``, ``"params/Dense_0/kernel"``). Groups keep the order of first appearance.

    Returns:
      ``[(name, flat_indices)]``.
    """
    probes.check_choice(by, "by", GROUPINGS)
    if by == "layer":
        names = _tree.layer_names(params)
    else:
        names = [
            "/".join(_tree.key_name(k) for k in path) or "params"
            for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
        ]
    groups: dict[str, list[np.ndarray]] = {}
    offset = 0
    for name, leaf in zip(names, jax.tree.leaves(params), strict=True):
        size = math.prod(jnp.shape(leaf))
        groups.setdefault(name, []).append(np.arange(offset, offset + size))
        offset += size
    return [(name, np.concatenate(parts)) for name, parts in groups.items()]


# --------------------------------------------------------------------------------------------
# Diagonal statistics
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DiagonalStatistics:
    """Sparsity and spikiness of a diagonal ``d`` (of the NME, usually).

    Attributes:
      num_entries: ``P``.
      threshold: the absolute threshold used, ``tol · max|d|`` (relative) or ``tol``.
      fraction_above: the fraction of entries with ``|d_i| > threshold`` (small: sparse).
      kurtosis: the *excess* kurtosis ``E[(d−μ)⁴]/σ⁴ − 3`` over entries (0 for a Gaussian; large:
        heavy-tailed, spiky); ``nan`` when all entries are equal.
      top_k: ``k``.
      top_k_share: ``Σ_{top k} |d_i| / Σ |d_i|``, the share of the absolute mass in the ``k``
        largest entries (``k/P`` for a flat diagonal, → 1 for a spiky one); ``nan`` if ``d = 0``.
      max_abs: ``max |d_i|``.
      mean_abs: ``mean |d_i|``.
    """

    num_entries: int
    threshold: float
    fraction_above: float
    kurtosis: float
    top_k: int
    top_k_share: float
    max_abs: float
    mean_abs: float


def _as_flat_numpy(diag: Any) -> np.ndarray:
    if isinstance(diag, Estimate):
        diag = diag.value
    leaves = [np.ravel(np.asarray(leaf, dtype=np.float64)) for leaf in jax.tree.leaves(diag)]
    if not leaves:
        raise ValueError("diag has no array leaves")
    return np.concatenate(leaves)


def _statistics(d: np.ndarray, tol: float, relative: bool, top_k: int | None) -> DiagonalStatistics:
    size = d.size
    absd = np.abs(d)
    max_abs = float(absd.max())
    threshold = tol * max_abs if relative else tol
    k = max(1, math.ceil(0.01 * size)) if top_k is None else min(top_k, size)
    centered = d - d.mean()
    var = float(np.mean(centered**2))
    kurtosis = float(np.mean(centered**4) / var**2 - 3.0) if var > 0 else math.nan
    total = float(absd.sum())
    top = float(np.sum(np.partition(absd, size - k)[size - k :])) if total > 0 else math.nan
    return DiagonalStatistics(
        num_entries=size,
        threshold=threshold,
        fraction_above=float(np.mean(absd > threshold)),
        kurtosis=kurtosis,
        top_k=k,
        top_k_share=top / total if total > 0 else math.nan,
        max_abs=max_abs,
        mean_abs=float(absd.mean()),
    )


def diagonal_statistics(
    diag: PyTree | Estimate,
    *,
    tol: float = 1e-3,
    relative: bool = True,
    top_k: int | None = None,
    by: str | None = None,
) -> DiagonalStatistics | dict[str, DiagonalStatistics]:
    """Sparsity (fraction above a threshold), spikiness (kurtosis) and concentration (top-k share).

    The paper's claim (section 4.3): as β grows, β-GELU's NME diagonal has fewer non-negligible
    entries (``fraction_above`` falls), and those that remain are large (``kurtosis`` and
    ``top_k_share`` rise). For ReLU it is exactly zero (``fraction_above = 0`` and ``nan`` kurtosis
    and share).

    Trap: use an *exact* diagonal (``nmelab.diagonal(op, exact=True)``) for these statistics.
    Hutchinson's diagonal adds noise of the size of each row's off-diagonal mass to every entry and
    makes any diagonal look dense and Gaussian.

    Args:
      diag: a pytree of diagonal entries (like the params) or an :class:`Estimate` of one.
      tol: the threshold; relative to ``max|d|`` when ``relative`` (default ``1e-3``), else absolute.
      relative: whether ``tol`` is relative to the largest entry.
      top_k: ``k`` for the top-k share; default ``ceil(1%`` of the entries).
      by: ``None`` for one summary over all entries, or ``"leaf"``/``"layer"`` for one per parameter
        group (:func:`param_groups`; the relative threshold is then per group).

    Returns:
      A :class:`DiagonalStatistics`, or ``{group name: DiagonalStatistics}`` when ``by`` is given.

    Raises:
      ValueError: for ``tol < 0`` (or ``0`` when relative), ``top_k < 1``, an unknown ``by`` or an
        empty diagonal.
    """
    if not isinstance(tol, int | float) or tol < 0 or (relative and tol == 0):
        raise ValueError(f"tol must be a number > 0 (>= 0 when absolute), got {tol!r}")
    if top_k is not None:
        probes.check_count(top_k, "top_k")
    d = _as_flat_numpy(diag)
    if by is None:
        return _statistics(d, tol, relative, top_k)
    tree = diag.value if isinstance(diag, Estimate) else diag
    return {
        name: _statistics(d[index], tol, relative, top_k) for name, index in param_groups(tree, by)
    }


# --------------------------------------------------------------------------------------------
# Block norms
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BlockNorms:
    """Frobenius norms ``‖A_ab‖_F`` of the blocks of an operator between parameter groups.

    Attributes:
      names: the group names (rows and columns), see :func:`param_groups`.
      norms: ``(G, G)`` block norms.
      stderr: ``(G, G)`` their standard errors (zero when exact; the delta method
        ``se(‖·‖²)/(2‖·‖)`` when estimated).
      squared_norms: ``(G, G)`` ``‖A_ab‖_F²`` (the unbiased quantity when estimated).
      squared_stderr: ``(G, G)`` the standard error of ``squared_norms``.
      exact: whether computed from the dense matrix.
      num_matvecs: products used (``P`` when exact, ``G · num_probes`` when estimated).
    """

    names: tuple[str, ...]
    norms: np.ndarray
    stderr: np.ndarray
    squared_norms: np.ndarray
    squared_stderr: np.ndarray
    exact: bool
    num_matvecs: int


def block_norms(
    op: Operator,
    *,
    by: str = "layer",
    exact: bool | None = None,
    key: Key | None = None,
    num_probes: int = 10,
    batch_size: int | None = None,
    loop: str = "auto",
) -> BlockNorms:
    """Frobenius norms of the blocks ``A_ab`` of ``op`` between parameter groups (leaves/layers).

    Exact (``P`` products): ``op.as_matrix()`` and the norm of each sub-block.

    Estimated (large models): for each group ``b``, probes ``v`` that are Rademacher on group ``b``
    and zero elsewhere; one product ``A v`` gives ``A_ab v_b`` for *every* group ``a`` at once, and
    ``E‖A_ab v_b‖² = tr(A_abᵀA_ab) = ‖A_ab‖_F²``. So ``G · num_probes`` products estimate all
    ``G²`` squared norms without bias, with stderr from the samples. The norms are their square
    roots (slightly biased upward by Jensen; the squared norms are not).

    Args:
      op: an nmelab operator.
      by: ``"layer"`` (default) or ``"leaf"``; see :func:`param_groups`.
      exact: dense (``True``), probed (``False``) or automatic (``None``: dense when
        ``P <= EXACT_MAX_PARAMS``).
      key: the random key (required when estimating).
      num_probes: probes per group when estimating (``>= 2`` for a stderr).
      batch_size: products per chunk when estimating (default 16).
      loop: ``"auto"``, ``"compiled"`` or ``"python"``; see :mod:`nmelab.estimators.loops`.

    Returns:
      A :class:`BlockNorms`.

    Raises:
      TypeError: for a non-operator or a missing key when estimating.
      ValueError: for an unknown ``by`` or ``num_probes < 1``.
    """
    probes.check_operator(op)
    groups = param_groups(op.params, by)
    names = tuple(name for name, _ in groups)
    if exact is None:
        exact = op.num_params <= EXACT_MAX_PARAMS
    if exact:
        matrix = np.asarray(op.as_matrix(), dtype=np.float64)
        squared = np.array(
            [[np.sum(matrix[np.ix_(a, b)] ** 2) for _, b in groups] for _, a in groups]
        )
        zeros = np.zeros_like(squared)
        return BlockNorms(names, np.sqrt(squared), zeros, squared, zeros, True, op.num_params)
    probes.check_key(key)
    num_probes = probes.check_count(num_probes, "num_probes")
    size = probes.check_batch_size(batch_size, probes.DEFAULT_BATCH_SIZE)
    group_ids = np.empty(op.num_params, dtype=np.int32)
    for g, (_, index) in enumerate(groups):
        group_ids[index] = g
    samples = np.asarray(
        _block_samples(
            op,
            key,
            jnp.asarray(group_ids),
            len(groups),
            num_probes,
            size,
            loops.use_python_loop(loop, op.params),
        ),
        dtype=np.float64,
    )  # (G_b, n, G_a)
    squared = samples.mean(axis=1).T  # rows a, columns b
    if num_probes > 1:
        squared_stderr = (samples.std(axis=1, ddof=1) / math.sqrt(num_probes)).T
    else:
        squared_stderr = np.full_like(squared, np.nan)
    norms = np.sqrt(np.maximum(squared, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        stderr = np.where(norms > 0, squared_stderr / (2 * norms), squared_stderr)
    return BlockNorms(
        names, norms, stderr, squared, squared_stderr, False, len(groups) * num_probes
    )


def _block_sample(num_groups: int, context: tuple, item: tuple) -> jax.Array:
    """Per-group ``‖(A v)_a‖²`` for a Rademacher ``v`` supported on one group."""
    lin, group_ids = context
    group, k = item
    num, dtype = probes.flat_size_and_dtype(lin.params)
    v = probes.sample_flat_probe(k, num, dtype, "rademacher") * (group_ids == group)
    av = probes.flat_product(lin, v.astype(dtype))
    return jax.ops.segment_sum(av**2, group_ids, num_segments=num_groups)


@loops.driver(static_argnums=(3, 4, 5))
def _block_samples(
    op: Operator,
    key: Key,
    group_ids: jax.Array,
    num_groups: int,
    num_probes: int,
    batch_size: int,
    python: bool,
) -> jax.Array:
    total = num_groups * num_probes
    groups = jnp.repeat(jnp.arange(num_groups), num_probes)
    keys = probes.probe_keys(key, total)
    context = (op.linearize(), group_ids)
    out = loops.map_chunks(
        _block_sample, num_groups, context, (groups, keys), total, batch_size, python
    )
    return out.reshape(num_groups, num_probes, num_groups)
