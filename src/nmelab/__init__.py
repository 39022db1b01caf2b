"""nmelab: the Gauss-Newton / Nonlinear-Modeling-Error split of the loss Hessian, on JAX.

The public API (each documented with the paper equation it implements):

* :class:`Objective` - a model ``apply_fn(params, x)`` and a loss.
* Curvature operators (eq. 2-4): :func:`hessian`, :func:`gauss_newton`, :func:`nme`,
  :func:`fisher`; the joint product :func:`split_product`; the empirical NTK :func:`ntk` (eq. 22).
* Estimators (traces, diagonals, Lanczos eigenpairs, SLQ spectral densities) and
  :func:`analyze` (:mod:`analysis`: all of them for one model in one record, the Python side of
  ``nmelab analyze``).
* :mod:`regularizers` - every sharpness regularizer (gradient penalty eq. 7-8, SAM/USAM eq. 42-43,
  weight noise eq. 17, Hessian/GN/NME trace penalties eq. 19-20) behind ``regularizers.get``.
"""

from nmelab import analysis, regularizers
from nmelab.analysis import analyze
from nmelab.curvature import (
    fisher,
    gauss_newton,
    hessian,
    linearize_split,
    nme,
    ntk,
    split_product,
)
from nmelab.estimators import (
    BlockNorms,
    DiagonalStatistics,
    Eigenpairs,
    Estimate,
    SpectralDensity,
    SplitEstimate,
    block_norms,
    density_on_grid,
    diagonal,
    diagonal_statistics,
    eigenpairs,
    gn_trace_sample,
    gn_trace_sampled,
    spectral_density,
    trace,
    trace_split,
)
from nmelab.estimators.fidelity import second_order_fidelity
from nmelab.objective import Objective

__version__ = "0.1.0"

__all__ = [
    "BlockNorms",
    "DiagonalStatistics",
    "Eigenpairs",
    "Estimate",
    "Objective",
    "SpectralDensity",
    "SplitEstimate",
    "analysis",
    "analyze",
    "block_norms",
    "density_on_grid",
    "diagonal",
    "diagonal_statistics",
    "eigenpairs",
    "fisher",
    "gauss_newton",
    "gn_trace_sample",
    "gn_trace_sampled",
    "hessian",
    "linearize_split",
    "nme",
    "ntk",
    "regularizers",
    "second_order_fidelity",
    "spectral_density",
    "split_product",
    "trace",
    "trace_split",
]
