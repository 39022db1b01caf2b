"""Estimators of traces, diagonals, eigenpairs and spectral densities of H, GN and NME.

* Traces: :func:`trace` (Hutchinson, Hutch++, exact), :func:`trace_split` (tr H, tr GN, tr NME on
  shared probes), :func:`gn_trace_sampled` / :func:`gn_trace_sample` (paper eq. 20).
* :func:`diagonal` (exact or Hutchinson), :func:`diagonal_split` (exact, all three at once),
  :func:`diagonal_statistics` and :func:`block_norms` (the NME's sparse, spiky diagonal and its
  layer structure, section 4.3).
* :func:`eigenpairs` (Lanczos with partial reorthogonalization) and :func:`spectral_density`
  (stochastic Lanczos quadrature) with :func:`density_on_grid`.

Every iterative estimator takes ``loop="auto" | "compiled" | "python"``: a compiled ``lax`` loop,
or a Python loop over one jitted step for convolutional models on CPU, where XLA runs
convolutions inside loops 20-50x slower (:mod:`nmelab.estimators.loops`).

Every estimator returns a small frozen pytree record (:class:`Estimate`, :class:`SplitEstimate`,
:class:`Eigenpairs`, :class:`SpectralDensity`) and takes an explicit ``key``.
"""

from nmelab.estimators.density import SpectralDensity, density_on_grid, spectral_density
from nmelab.estimators.diagnostics import (
    BlockNorms,
    DiagonalStatistics,
    block_norms,
    diagonal_statistics,
    param_groups,
)
from nmelab.estimators.diagonal import diagonal, diagonal_split
from nmelab.estimators.hutchinson import (
    gn_trace_from_labels,
    gn_trace_sample,
    gn_trace_sampled,
    hutchinson_trace,
    sample_model_labels,
    trace,
    trace_split,
)
from nmelab.estimators.hutchpp import hutchpp_trace
from nmelab.estimators.lanczos import Eigenpairs, eigenpairs
from nmelab.estimators.probes import Estimate, SplitEstimate, matrix_operator, sample_probe

__all__ = [
    "BlockNorms",
    "DiagonalStatistics",
    "Eigenpairs",
    "Estimate",
    "SpectralDensity",
    "SplitEstimate",
    "block_norms",
    "density_on_grid",
    "diagonal",
    "diagonal_split",
    "diagonal_statistics",
    "eigenpairs",
    "gn_trace_from_labels",
    "gn_trace_sample",
    "gn_trace_sampled",
    "hutchinson_trace",
    "hutchpp_trace",
    "matrix_operator",
    "param_groups",
    "sample_model_labels",
    "sample_probe",
    "spectral_density",
    "trace",
    "trace_split",
]
