"""The tiny float64 problem and its analysis, cached so the analysis tests share one compilation."""

import functools

import jax
from jax.flatten_util import ravel_pytree

import toy_problems as tp
from nmelab import analysis

NUM_PROBES = 8
SEED = 3


@functools.cache
def problem():
    """``(objective, params, batch)``: a GELU MLP 4-5-4-3 on 6 examples (P = 64)."""
    return tp.mlp_problem("gelu", sizes=(4, 5, 4, 3), num=6)


def num_params() -> int:
    return ravel_pytree(problem()[1])[0].size


@functools.cache
def result() -> analysis.Analysis:
    """``analyze`` with ``num_iters = P``: Lanczos with full reorthogonalization is then exact."""
    return analysis.analyze(
        *problem(), key=jax.random.key(SEED), num_probes=NUM_PROBES, num_iters=num_params()
    )
