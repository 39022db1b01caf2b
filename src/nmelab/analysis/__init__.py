"""Analysis of one trained model: the H / GN / NME split (paper eq. 2) in one call.

:func:`analyze` ``(objective, params, batch, *, key)`` composes :mod:`nmelab.estimators` into an
:class:`Analysis`: traces of H, GN and NME ± stderr on shared probes, their extreme eigenpairs
(Lanczos), the NME diagonal's sparsity per layer and the NME's layer block norms (section 4.3,
App. A.2), and spectral densities (SLQ). :meth:`Analysis.to_dict` is its JSON form and
:meth:`Analysis.table` its printable table; ``nmelab analyze`` only renders it.

Layer: above :mod:`nmelab.estimators`, below :mod:`nmelab.train`; no files and no configs.
"""

from nmelab.analysis.core import EXACT_DIAGONAL_MAX_PARAMS, analyze, nme_diagonal
from nmelab.analysis.result import MATRICES, Analysis

__all__ = ["EXACT_DIAGONAL_MAX_PARAMS", "MATRICES", "Analysis", "analyze", "nme_diagonal"]
