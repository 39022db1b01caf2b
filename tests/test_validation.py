"""The generic argument checks of nmelab.validation: each names the argument and what was given."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nmelab import validation


def test_check_number_bounds_and_types():
    assert validation.check_number(np.float32(2.5), "rho", minimum=0.0) == 2.5
    assert validation.check_number(0, "rho", minimum=0.0) == 0.0
    with pytest.raises(ValueError, match=r"^rho must be a finite number > 0, got 0.0$"):
        validation.check_number(0, "rho", minimum=0.0, strict=True)
    with pytest.raises(ValueError, match=r"^rho must be a finite number >= 0.5, got 0.25$"):
        validation.check_number(0.25, "rho", minimum=0.5)
    with pytest.raises(ValueError, match=r"^lr must be a finite number, got inf$"):
        validation.check_number(float("inf"), "lr")
    for bad in (True, "1", [1.0], np.ones(2), 1j):
        with pytest.raises(TypeError, match="^rho must be a real number"):
            validation.check_number(bad, "rho")
    with pytest.raises(TypeError, match="rho must be a concrete Python number"):
        jax.jit(lambda r: validation.check_number(r, "rho"))(1.0)


def test_check_count_refuses_floats_and_bools():
    assert validation.check_count(np.int64(3), "num_probes") == 3
    for bad in (2.0, True, "2", None):
        with pytest.raises(TypeError, match=r"^num_probes must be an integer >= 1, got"):
            validation.check_count(bad, "num_probes")
    with pytest.raises(ValueError, match=r"^num_points must be an integer >= 3, got 2$"):
        validation.check_count(2, "num_points", 3)


def test_check_choice_lists_the_choices():
    assert validation.check_choice("test", "split", ("train", "test")) == "test"
    with pytest.raises(ValueError, match=r"^split must be one of 'train', 'test'; got 'val'$"):
        validation.check_choice("val", "split", ("train", "test"))


def test_check_finite_names_the_leaf_and_skips_tracers():
    tree = {"a": np.zeros(3), "b": [jnp.ones((2, 2)), np.arange(4)]}
    validation.check_finite(tree, "tree")
    tree["b"][0] = tree["b"][0].at[1, 0].set(-jnp.inf)
    with pytest.raises(
        ValueError,
        match=r"^tree\['b'\]\[0\] contains NaN or inf, must be finite: found 0 NaN and 1 inf among its 4 values "
        r"\(shape \(2, 2\), first at index \(1, 0\)\)$",
    ):
        validation.check_finite(tree, "tree")
    jax.jit(lambda x: validation.check_finite(x, "x") or x)(jnp.array([jnp.nan]))  # skipped


def test_check_examples_refuses_empty_inputs_even_under_jit():
    assert validation.check_examples({"u": np.zeros((3, 2)), "v": np.zeros(3)}) == 3
    with pytest.raises(ValueError, match=r"^x is empty \(leading size 0, shapes \[\(0, 2\)\]\)"):
        jax.jit(lambda x: validation.check_examples(x) and x)(jnp.zeros((0, 2)))
    with pytest.raises(ValueError, match="every leaf of x must share the batch size"):
        validation.check_examples({"u": np.zeros((3, 2)), "v": np.zeros(2)})
    with pytest.raises(ValueError, match="x has no array leaves"):
        validation.check_examples({})
