"""Curvature operators: the Hessian split ``H = GN + NME`` (paper eq. 2) and the Fisher (eq. 4).

Each constructor takes ``(objective, params, batch)`` and returns a matrix-free operator with
``mv``, ``@``, ``as_matrix()``, ``linearize()`` and ``symmetric``/``psd`` flags. Every product is
forward-over-reverse; :mod:`nmelab.curvature.dense` holds the dense twins used in the tests.
"""

from nmelab.curvature.fisher import fisher, sampled_targets
from nmelab.curvature.gauss_newton import gauss_newton, gauss_newton_vector_product
from nmelab.curvature.hessian import hessian, hessian_vector_product
from nmelab.curvature.nme import nme, nme_vector_product
from nmelab.curvature.ntk import ntk
from nmelab.curvature.operator import CurvatureOperator, LinearizedOperator, Operator
from nmelab.curvature.split import linearize_split, split_product

__all__ = [
    "CurvatureOperator",
    "LinearizedOperator",
    "Operator",
    "fisher",
    "gauss_newton",
    "gauss_newton_vector_product",
    "hessian",
    "hessian_vector_product",
    "linearize_split",
    "nme",
    "nme_vector_product",
    "ntk",
    "sampled_targets",
    "split_product",
]
