""":func:`analyze`: the H / GN / NME split of one model at one point, from nmelab's estimators.

It only composes :mod:`nmelab.estimators` (no files, no configs): any ``apply_fn`` that is a pure
function of its params works, whatever library built it (see ``docs/models.md``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nmelab import losses
from nmelab.analysis.result import MATRICES, Analysis
from nmelab.curvature import gauss_newton, hessian, nme
from nmelab.curvature.operator import check_inputs
from nmelab.estimators import (
    Estimate,
    block_norms,
    diagonal,
    diagonal_split,
    diagonal_statistics,
    eigenpairs,
    gn_trace_sampled,
    spectral_density,
    trace_split,
)
from nmelab.estimators.probes import check_count, check_key, flat_size_and_dtype
from nmelab.objective import Objective
from nmelab.types import Batch, Key, Params

__all__ = ["EXACT_DIAGONAL_MAX_PARAMS", "analyze", "nme_diagonal"]

EXACT_DIAGONAL_MAX_PARAMS = 20_000
"""``exact_diagonal=None`` computes the exact diagonals (``P`` forward-only forms) up to this ``P``."""

_MAKERS = {"hessian": hessian, "gauss_newton": gauss_newton, "nme": nme}


def _exact(exact_diagonal: bool | None, num_params: int) -> bool:
    if exact_diagonal is None:
        return num_params <= EXACT_DIAGONAL_MAX_PARAMS
    if not isinstance(exact_diagonal, bool):
        raise TypeError(f"exact_diagonal must be True, False or None, got {exact_diagonal!r}")
    return exact_diagonal


def nme_diagonal(
    objective: Objective,
    params: Params,
    batch: Batch,
    *,
    key: Key | None = None,
    num_probes: int = 30,
    exact: bool | None = None,
) -> tuple[Estimate, bool]:
    """The NME diagonal ``diag(NME)`` (section 4.3), exact for small models; ``(estimate, exact)``.

    Exact: ``P`` forward-only quadratic forms ``e_iᵀNMEe_i`` (:func:`nmelab.diagonal` with
    ``exact=True``). Otherwise Hutchinson's ``E[v ⊙ NME v]`` with ``num_probes`` probes.

    Trap: a Hutchinson diagonal carries noise of each row's whole off-diagonal mass, which makes
    any diagonal look dense; its sparsity statistics are not those of the NME (see
    :func:`nmelab.diagonal_statistics`). ``exact=None`` picks exact up to
    :data:`EXACT_DIAGONAL_MAX_PARAMS` parameters.

    Raises:
      TypeError: for a bad ``exact``, or a missing key when the diagonal is estimated.
    """
    num_params, _ = flat_size_and_dtype(params)
    exact = _exact(exact, num_params)
    op = nme(objective, params, batch)
    if exact:
        return diagonal(op, exact=True), True
    return diagonal(op, key, num_probes), False


def analyze(
    objective: Objective,
    params: Params,
    batch: Batch,
    *,
    key: Key,
    num_probes: int = 30,
    num_iters: int = 40,
    num_slq_probes: int | None = None,
    exact_diagonal: bool | None = None,
) -> Analysis:
    """Traces, extreme eigenpairs, NME-diagonal structure and spectra of ``H = GN + NME`` (eq. 2).

    On one batch and at one point ``θ``:

    * ``tr H``, ``tr GN``, ``tr NME`` by Hutchinson on *shared* probes
      (:func:`nmelab.trace_split`), so ``vᵀHv = vᵀGNv + vᵀNMEv`` probe by probe
      (:attr:`Analysis.split_residual` is the largest violation); the exact traces (sums of the
      exact diagonals) when the diagonals are exact; the sampled-label GN trace of eq. 20 for
      cross-entropy;
    * ``λ_min`` and ``λ_max`` of each matrix by Lanczos (``num_iters`` steps, full
      reorthogonalization), with residual norms;
    * the NME diagonal's sparsity and spikiness overall and per layer
      (:func:`nmelab.diagonal_statistics`), and the NME's layer block norms
      (:func:`nmelab.block_norms`; dense up to 4096 parameters, else probed);
    * spectral densities of the three by stochastic Lanczos quadrature.

    Randomness: ``key`` is split into five keys, for the traces, eq. 20, Lanczos, SLQ and the
    probed diagonal/block norms, in that order; the same key gives the same result.

    Trap: the estimates are of the *batch* loss at ``θ``. For a model with BatchNorm pass the
    eval-mode ``apply_fn`` (running statistics); a train-mode one makes every output depend on the
    whole batch and the GN a different (also correct) matrix (see :mod:`nmelab.objective`).
    Analyse in float64 (``jax_enable_x64``, float64 params and inputs): the NME is a small
    difference of large terms and Lanczos loses orthogonality in float32.

    Args:
      objective: the model and loss.
      params: the point θ.
      batch: ``(x, y)``.
      key: a ``jax.random`` key.
      num_probes: shared Hutchinson probes of the traces (``>= 2``), draws of eq. 20, and probes
        of the NME diagonal and block norms when they are estimated.
      num_iters: Lanczos steps (capped at ``P``).
      num_slq_probes: SLQ probes; default ``max(2, num_probes // 3)``.
      exact_diagonal: exact diagonals (``P`` forms; ``True``), Hutchinson's (``False``) or exact
        up to :data:`EXACT_DIAGONAL_MAX_PARAMS` parameters (``None``).

    Returns:
      An :class:`~nmelab.analysis.Analysis`.

    Raises:
      TypeError, ValueError: for malformed inputs, naming the argument.
    """
    check_inputs(objective, params, batch)
    check_key(key)
    num_probes = check_count(num_probes, "num_probes", 2)
    num_iters = check_count(num_iters, "num_iters", 2)
    if num_slq_probes is None:
        num_slq_probes = max(2, num_probes // 3)
    num_slq_probes = check_count(num_slq_probes, "num_slq_probes")
    num_params, _ = flat_size_and_dtype(params)
    exact = _exact(exact_diagonal, num_params)
    trace_key, gn_key, eig_key, slq_key, diag_key = jax.random.split(key, 5)
    batch = tuple(batch)

    split = trace_split(objective, params, batch, trace_key, num_probes)
    residual = split.hessian.samples - split.gauss_newton.samples - split.nme.samples
    gn_sampled = None
    if objective.loss_fn is losses.cross_entropy:
        gn_sampled = gn_trace_sampled(
            objective, params, batch, gn_key, num_probes, form="per_example"
        )
    if exact:
        diagonals = diagonal_split(objective, params, batch).as_dict()
        exact_traces = {name: _total(diagonals[name]) for name in MATRICES}
        nme_diag = diagonals["nme"]
    else:
        exact_traces = None
        nme_diag, _ = nme_diagonal(
            objective, params, batch, key=diag_key, num_probes=num_probes, exact=False
        )
    ops = {name: _MAKERS[name](objective, params, batch) for name in MATRICES}
    return Analysis(
        num_params=num_params,
        num_examples=int(jax.tree.leaves(batch[0])[0].shape[0]),
        loss=float(objective.value(params, batch)),
        num_probes=num_probes,
        num_iters=num_iters,
        traces=split,
        split_residual=float(jnp.max(jnp.abs(residual))),
        exact_traces=exact_traces,
        gn_trace_sampled=gn_sampled,
        eigenpairs={
            name: eigenpairs(op, 2, "both", eig_key, num_iters) for name, op in ops.items()
        },
        nme_diagonal=nme_diag,
        nme_diagonal_exact=exact,
        nme_diagonal_statistics=diagonal_statistics(nme_diag),
        nme_layer_statistics=diagonal_statistics(nme_diag, by="layer"),
        nme_block_norms=block_norms(ops["nme"], key=diag_key, num_probes=num_probes),
        spectral_densities={
            name: spectral_density(op, slq_key, num_slq_probes, num_iters)
            for name, op in ops.items()
        },
    )


def _total(estimate: Estimate) -> float:
    return float(sum(np.sum(np.asarray(leaf)) for leaf in jax.tree.leaves(estimate.value)))
