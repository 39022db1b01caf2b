"""nmelab: the Gauss-Newton / Nonlinear-Modeling-Error split of the loss Hessian, on JAX.

The public API (each documented with the paper equation it implements):

* :class:`Objective` - a model ``apply_fn(params, x)`` and a loss.
* Curvature operators (eq. 2-4): :func:`hessian`, :func:`gauss_newton`, :func:`nme`,
  :func:`fisher`; the joint product :func:`split_product`; the empirical NTK :func:`ntk` (eq. 22).
"""

from nmelab.curvature import (
    fisher,
    gauss_newton,
    hessian,
    linearize_split,
    nme,
    ntk,
    split_product,
)
from nmelab.objective import Objective

__version__ = "0.1.0"

__all__ = [
    "Objective",
    "fisher",
    "gauss_newton",
    "hessian",
    "linearize_split",
    "nme",
    "ntk",
    "split_product",
]
