"""The two drivers of every iterative estimator agree: compiled loop vs Python loop of jitted steps."""

import estimator_cases as cases
import jax
import numpy as np
import pytest

import nmelab
from nmelab.estimators import loops
from nmelab.estimators.fidelity import second_order_fidelity

KEY = jax.random.key(3)


def _cnn():
    return cases.problem("cnn")


def _assert_same(python, compiled):
    leaves_p, tree_p = jax.tree.flatten(python)
    leaves_c, tree_c = jax.tree.flatten(compiled)
    assert tree_p == tree_c
    for a, b in zip(leaves_p, leaves_c, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-300)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-11 * scale)


ESTIMATORS = {
    "hutchinson": lambda loop: nmelab.trace(
        cases.operator("hessian", "cnn"), KEY, 5, batch_size=2, loop=loop
    ),
    "hutchinson_fisher_like": lambda loop: nmelab.trace(
        cases.operator("hessian", "cnn").linearize(), KEY, 3, batch_size=2, loop=loop
    ),
    "hutchpp": lambda loop: nmelab.trace(
        cases.operator("nme", "cnn"), KEY, 9, method="hutchpp", batch_size=2, loop=loop
    ),
    "exact_trace": lambda loop: nmelab.trace(
        cases.operator("gauss_newton", "cnn"), method="exact", loop=loop
    ),
    "trace_split": lambda loop: nmelab.trace_split(*_cnn(), KEY, 5, batch_size=2, loop=loop),
    "hutchinson_diagonal": lambda loop: nmelab.diagonal(
        cases.operator("hessian", "cnn"), KEY, 5, batch_size=2, loop=loop
    ),
    "exact_diagonal": lambda loop: nmelab.diagonal(
        cases.operator("nme", "cnn"), exact=True, loop=loop
    ),
    "diagonal_split": lambda loop: nmelab.estimators.diagonal_split(*_cnn(), loop=loop),
    "eigenpairs": lambda loop: nmelab.eigenpairs(
        cases.operator("hessian", "cnn"), 2, "both", KEY, num_iters=8, loop=loop
    ),
    "spectral_density": lambda loop: nmelab.spectral_density(
        cases.operator("nme", "cnn"), KEY, 2, 6, loop=loop
    ),
    "gn_trace_minibatch": lambda loop: nmelab.estimators.gn_trace_sampled(
        *_cnn(), KEY, 3, loop=loop
    ),
    "gn_trace_per_example": lambda loop: nmelab.estimators.gn_trace_sampled(
        *_cnn(), KEY, 2, form="per_example", batch_size=3, loop=loop
    ),
    "fidelity": lambda loop: second_order_fidelity(*_cnn(), [0.1, 0.01], loop=loop),
    "block_norms": lambda loop: nmelab.block_norms(
        cases.operator("hessian", "cnn"), exact=False, key=KEY, num_probes=2, loop=loop
    ),
}


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_python_loop_matches_compiled_loop_on_a_cnn(name):
    run = ESTIMATORS[name]
    python, compiled = run("python"), run("compiled")
    if name == "block_norms":  # a record of numpy arrays, not a pytree
        python, compiled = python.squared_norms, compiled.squared_norms
    _assert_same(python, compiled)


def test_auto_takes_the_python_loop_for_convolutions_on_cpu():
    _, cnn_params, _ = _cnn()
    _, mlp_params, _ = cases.problem()
    assert loops.convolutional(cnn_params) and not loops.convolutional(mlp_params)
    assert loops.use_python_loop("auto", cnn_params) == (jax.default_backend() == "cpu")
    assert not loops.use_python_loop("auto", mlp_params)
    assert loops.use_python_loop("python", mlp_params)
    assert not loops.use_python_loop("compiled", cnn_params)


def test_unknown_loop_is_refused():
    with pytest.raises(ValueError, match="loop must be one of 'auto', 'compiled', 'python'"):
        nmelab.trace(cases.operator("hessian"), KEY, 2, loop="scan")
