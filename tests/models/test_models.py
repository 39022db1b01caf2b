import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nmelab import models

TINY = {
    "mlp_tiny": (3, 40),
    "cnn_tiny": (3, 40),
    "cnn_bn_tiny": (3, 40),
    "rescnn_tiny": (3, 40),
    "wrn_tiny": (3, 8, 8, 3),
    "resnet_tiny": (3, 16, 16, 3),
}
BN_MODELS = ("cnn_bn_tiny", "rescnn_tiny", "wrn_tiny", "resnet_tiny")


def abstract_count(model, shape):
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros(shape, jnp.float32), train=False)
    )
    return models.param_count(variables["params"])


# Real `model.init` compiles one random-number kernel per distinct parameter shape (seconds each on
# a loaded 2-core machine), so the tests fill variables by shape with numpy instead (fan-in scaled
# normals, BN scale 1 / bias 0, running mean 0 / var 1). `test_real_init_mlp` and the slow
# `test_real_init_all_tiny` cover the real initialisers.


def fill_by_shape(model, x, seed):
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name in ("var", "scale"):
            return np.ones(leaf.shape, leaf.dtype)
        if name in ("mean", "bias"):
            return np.zeros(leaf.shape, leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1]))
        return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def init(model, shape, seed=0, real=False):
    x = jax.random.normal(jax.random.key(seed + 1), shape, jnp.float32)
    if not real:
        return fill_by_shape(model, x, seed), x
    return model.init(jax.random.key(seed), x, train=False), x


@pytest.mark.parametrize(
    ("name", "shape", "kwargs", "expected"),
    [
        ("wrn_28_10", (1, 32, 32, 3), {"num_classes": 10}, 36_479_194),
        ("wrn_16_4", (1, 32, 32, 3), {"num_classes": 10}, 2_748_890),
        ("resnet50", (1, 224, 224, 3), {}, 25_557_032),
        ("resnet18", (1, 224, 224, 3), {}, 11_689_512),
        ("cnn1d", (1, 40), {}, 10_826),
    ],
)
def test_parameter_counts(name, shape, kwargs, expected):
    assert abstract_count(models.get(name, **kwargs), shape) == expected


def test_headline_counts_within_rounding():
    wrn = abstract_count(models.get("wrn_28_10"), (1, 32, 32, 3))
    rn50 = abstract_count(models.get("resnet50"), (1, 224, 224, 3))
    assert abs(wrn - 36.5e6) < 0.1e6
    assert abs(rn50 - 25.6e6) < 0.1e6


def test_real_init_mlp():
    model = models.get("mlp_tiny")
    variables, x = init(model, (2, 40), real=True)
    assert models.param_count(variables["params"]) == abstract_count(model, (2, 40)) == 1098
    assert model.apply(variables, x).shape == (2, 10)


_RUNS = {}


def run_tiny(name):
    """Init ``name`` and apply it once per mode (cached: each model compiles once per file)."""
    if name not in _RUNS:
        model = models.get(name)
        variables, x = init(model, TINY[name])
        out_eval, eval_state = model.apply(variables, x, train=False, mutable=["batch_stats"])
        out_train, train_state = model.apply(variables, x, train=True, mutable=["batch_stats"])
        _RUNS[name] = (model, variables, out_eval, eval_state, out_train, train_state)
    return _RUNS[name]


@pytest.mark.parametrize("name", list(TINY))
def test_tiny_forward_train_and_eval(name):
    model, variables, out_eval, _, out_train, _ = run_tiny(name)
    assert out_eval.shape == out_train.shape == (TINY[name][0], model.num_classes)
    assert np.all(np.isfinite(out_eval)) and np.all(np.isfinite(out_train))
    assert ("batch_stats" in variables) == (name in BN_MODELS)


@pytest.mark.parametrize("name", BN_MODELS)
def test_batch_stats_update_in_train_mode_only(name):
    _, variables, _, eval_state, _, train_state = run_tiny(name)
    stats = variables["batch_stats"]
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats, train_state["batch_stats"])
    assert all(jax.tree.leaves(changed))  # every running mean and variance moved
    same = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), stats, eval_state["batch_stats"])
    assert all(jax.tree.leaves(same))


def test_train_mode_couples_examples_eval_mode_does_not():
    model = models.get("cnn_bn_tiny")
    variables, x = init(model, (4, 40))
    x2 = x.at[1:].multiply(3.0)  # change every example but the first

    def first(inputs, train):
        if train:
            return model.apply(variables, inputs, train=True, mutable=["batch_stats"])[0][0]
        return model.apply(variables, inputs, train=False)[0]

    assert not np.allclose(first(x, True), first(x2, True))
    np.testing.assert_allclose(first(x, False), first(x2, False), rtol=1e-6)


@pytest.mark.parametrize("name", BN_MODELS)
def test_bn_models_refuse_implicit_mode(name):
    model = models.get(name)
    variables, x = init(model, TINY[name])
    with pytest.raises(ValueError, match="train=True"):
        model.apply(variables, x)


def test_models_without_bn_ignore_train():
    model = models.get("mlp_tiny")
    variables, x = init(model, (3, 40))
    a = model.apply(variables, x)
    b = model.apply(variables, x, train=True)
    np.testing.assert_array_equal(a, b)


def test_activation_by_name_changes_output():
    x = jax.random.normal(jax.random.key(1), (3, 40), jnp.float32)
    relu = models.get("mlp_tiny")
    variables = relu.init(jax.random.key(0), x, train=False)
    outs = {
        "relu": relu.apply(variables, x),
        "gelu": models.get("mlp_tiny", activation="gelu").apply(variables, x),
        "beta_gelu_2": models.get(
            "mlp_tiny", activation="beta_gelu", activation_params={"beta": 2.0}
        ).apply(variables, x),
        "beta_gelu_5": models.get(
            "mlp_tiny", activation="beta_gelu", activation_params=(("beta", 5.0),)
        ).apply(variables, x),
    }
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not np.allclose(outs[a], outs[b]), (a, b)


def test_activation_params_stored_hashable():
    model = models.get("cnn_tiny", activation="augmented_relu", activation_params={"beta": 2.0})
    assert model.activation_params == (("beta", 2.0),)
    hash(model.activation_params)


def test_activation_reaches_conv_models():
    model = models.get("wrn_tiny")
    variables, x = init(model, TINY["wrn_tiny"])
    a = model.apply(variables, x, train=False)
    b = models.get("wrn_tiny", activation="tanh").apply(variables, x, train=False)
    assert not np.allclose(a, b)


def test_cnn_handles_1d_with_channels_and_2d():
    model = models.get("cnn_tiny", num_classes=5)
    for shape in [(2, 40, 2), (2, 8, 8, 3)]:  # (N, 40) is covered by the tiny runs
        variables, x = init(model, shape)
        assert model.apply(variables, x).shape == (2, 5)
    with pytest.raises(ValueError, match="x: expected"):
        init(model, (2, 2, 4, 4, 1))


def test_resnet_cifar_stem_and_float64():
    model = models.get("resnet_tiny", stem="cifar")
    variables, x = init(model, (2, 8, 8, 3))
    variables64 = jax.tree.map(lambda a: a.astype(jnp.float64), variables)
    out = model.apply(variables64, x.astype(jnp.float64), train=False)
    assert out.dtype == jnp.float64 and out.shape == (2, 10)


def test_wrn_dropout_needs_rng_in_train_mode():
    model = models.get("wrn_tiny", dropout_rate=0.3)
    variables, x = init(model, TINY["wrn_tiny"])
    out, _ = model.apply(
        variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)}
    )
    assert out.shape == (3, 10)
    with pytest.raises(flax.errors.InvalidRngError):
        model.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_array_equal(
        model.apply(variables, x, train=False), model.apply(variables, x, train=False)
    )


def test_registry_errors():
    with pytest.raises(ValueError, match="choices: .*wrn_28_10"):
        models.get("vgg16")
    with pytest.raises(TypeError, match="no field.*depthh"):
        models.get("wrn_tiny", depthh=3)
    with pytest.raises(ValueError, match="depth"):
        init(models.get("wrn_tiny", depth=12), (1, 8, 8, 3))
    assert set(TINY) <= set(models.names())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TINY))
def test_real_init_all_tiny(name):
    model = models.get(name)
    variables, x = init(model, TINY[name], real=True)
    out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert out.shape == (TINY[name][0], model.num_classes)
    assert np.all(np.isfinite(out))
