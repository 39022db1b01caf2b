"""The sampled-label Fisher (eq. 4) and the empirical NTK (App. A.1)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import nmelab
import toy_problems as tp
from nmelab.curvature import dense


def test_fisher_with_enumerated_labels_equals_gauss_newton():
    objective, params, (x, y) = tp.mlp_problem("tanh", "cross_entropy")
    probs = jax.nn.softmax(objective.outputs(params, x))
    # Enumerating the labels with their probabilities = the Hessian at soft targets q = p.
    fisher_exact = nmelab.hessian(objective, params, (x, probs)).as_matrix()
    gn = nmelab.gauss_newton(objective, params, (x, y)).as_matrix()
    np.testing.assert_allclose(fisher_exact, gn, rtol=0, atol=1e-14)
    # The same for MSE: the predictive mean is z itself.
    objective = nmelab.Objective(objective.apply_fn, "mse")
    z = objective.outputs(params, x)
    np.testing.assert_allclose(
        nmelab.hessian(objective, params, (x, z)).as_matrix(),
        nmelab.gauss_newton(objective, params, (x, y)).as_matrix(),
        rtol=0,
        atol=1e-14,
    )


def test_fisher_equals_mean_of_sampled_hessians():
    objective, params, (x, y) = tp.mlp_problem("tanh", "cross_entropy", num=3)
    key = jax.random.PRNGKey(7)
    num_samples = 5
    op = nmelab.fisher(objective, params, (x, y), key, num_samples)
    assert op.name == "fisher" and op.symmetric and not op.psd
    logits = objective.outputs(params, x)
    labels = jax.random.categorical(key, logits, axis=-1, shape=(num_samples, x.shape[0]))
    mean_hessian = (
        sum(dense.dense_hessian(objective, params, (x, lab)) for lab in labels) / num_samples
    )
    np.testing.assert_allclose(op.as_matrix(), mean_hessian, rtol=1e-10, atol=1e-13)


def test_fisher_monte_carlo_error_falls_like_inverse_sqrt_samples():
    """E‖F_S v − GN v‖² = c / S exactly: the leftover NME term averages S iid zero-mean draws."""
    objective, params, batch = tp.mlp_problem("tanh", "cross_entropy")
    v = tp.random_like(jax.random.PRNGKey(0), params)
    gn_v = ravel_pytree(nmelab.gauss_newton(objective, params, batch).mv(v))[0]
    num_keys = 150

    def scaled_sq_errors(num_samples):
        errs = []
        for i in range(num_keys):
            key = jax.random.fold_in(jax.random.PRNGKey(num_samples), i)
            f_v = ravel_pytree(nmelab.fisher(objective, params, batch, key, num_samples).mv(v))[0]
            errs.append(num_samples * float(jnp.sum((f_v - gn_v) ** 2)))
        return np.array(errs)

    small, large = scaled_sq_errors(1), scaled_sq_errors(16)
    # Both estimate the same constant c; compare with a stderr derived from the samples.
    diff = small.mean() - large.mean()
    stderr = np.sqrt(small.var(ddof=1) / num_keys + large.var(ddof=1) / num_keys)
    assert abs(diff) < 4 * stderr
    # And the unscaled error really shrinks (c > 0).
    assert large.mean() / 16 < small.mean() / 4


def test_ntk_spectrum_matches_gauss_newton():
    objective, params, (x, y) = tp.mlp_problem("tanh", "cross_entropy", num=4)
    num = x.shape[0]
    kernel = nmelab.ntk(objective, params, x)
    assert kernel.shape == (num * 3, num * 3)
    output_hessian = dense.dense_output_hessian(objective, params, (x, y))
    ntk_eigs = np.sort(np.linalg.eigvals(np.asarray(kernel @ (num * output_hessian))).real)
    gn_eigs = np.sort(
        np.linalg.eigvalsh(np.asarray(nmelab.gauss_newton(objective, params, (x, y)).as_matrix()))
    )
    nonzero = ntk_eigs[np.abs(ntk_eigs) > 1e-10]
    np.testing.assert_allclose(nonzero, gn_eigs[-nonzero.size :], rtol=1e-8)
    assert np.all(np.abs(gn_eigs[: -nonzero.size]) < 1e-10)
