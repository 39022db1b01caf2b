"""The paper-scale recipes: every field the paper or its cited source fixes, against the cited value.

Sources: the paper §3; Zagoruyko & Komodakis (2016) §3 ("Z&K"); Goyal et al. (2017) §2, §5.1;
google-research/sam (``train_step`` adds ``0.5·λ·Σ‖w‖²`` to the loss SAM perturbs).
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nmelab import data, models
from nmelab.train import default_config, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

CIFAR_RECIPE = {  # key: (value, source)
    "dataset": ("cifar10", "paper §3"),
    "model": ("wrn_28_10", "paper §3"),
    "lr_schedule": ("cosine", "paper §3"),
    "learning_rate": (0.1, "Z&K §3"),
    "warmup_epochs": (0.0, "Z&K §3"),
    "momentum": (0.9, "Z&K §3"),
    "nesterov": (True, "Z&K §3"),
    "weight_decay": (5e-4, "Z&K §3"),
    "weight_decay_mask": ("all", "Z&K's code, google-research/sam"),
    "batch_size": (128, "Z&K §3"),
    "num_epochs": (200.0, "Z&K §3"),
    "augment": (True, "Z&K §3: reflection-padded crop + flip"),
    "sam_decay_in_loss": (True, "google-research/sam"),
}

IMAGENET_RECIPE = {
    "dataset": ("imagenet", "paper §3"),
    "model": ("resnet50", "paper §3"),
    "lr_schedule": ("cosine", "paper §3"),
    "num_epochs": (300.0, "paper §3"),
    "warmup_epochs": (5.0, "Goyal §2.2"),
    "momentum": (0.9, "Goyal §5.1"),
    "nesterov": (True, "Goyal §5.1"),
    "weight_decay": (1e-4, "Goyal §5.1"),
    "weight_decay_mask": ("no_bn", "Goyal §5.1"),
    "sam_decay_in_loss": (True, "google-research/sam"),
}


@pytest.mark.parametrize(
    ("path", "recipe"),
    [
        ("cifar10_wrn28_10.py", CIFAR_RECIPE),
        ("cifar10_wrn16_4.py", {**CIFAR_RECIPE, "model": ("wrn_16_4", "stand-in")}),
        ("imagenet_resnet50.py", IMAGENET_RECIPE),
    ],
)
def test_every_cited_field_has_the_cited_value(path, recipe):
    config = load_config(CONFIGS / path)
    for key, (value, source) in recipe.items():
        assert config[key] == value, f"{path}: {key} = {config[key]!r}, {source} says {value!r}"
        assert type(config[key]) is type(value), key


def test_imagenet_batch_learning_rate_and_bn_batch_follow_goyal():
    config = load_config(CONFIGS / "imagenet_resnet50.py")
    # Goyal §2.1: η = 0.1·kn/256; §2.3 and §5.1: BN statistics over n = 32 images per worker
    assert config.learning_rate == pytest.approx(0.1 * config.batch_size / 256)
    assert config.model_kwargs.bn_batch == 32
    assert config.batch_size % config.model_kwargs.bn_batch == 0
    model = models.get(config.model, **config.model_kwargs.to_dict())
    assert model.bn_batch == 32 and model.stage_sizes == (3, 4, 6, 3)


def test_cifar_model_has_no_dropout_by_default():
    # Z&K report WRN-28-10 without dropout and with 0.3; the recipe's default is without
    config = load_config(CONFIGS / "cifar10_wrn28_10.py")
    model = models.get(config.model, **config.model_kwargs.to_dict())
    assert (model.depth, model.width, model.dropout_rate) == (28, 10, 0.0)


@pytest.mark.slow  # four compilations of a WRN: ~10 s idle, 40 s on a loaded 2-core machine
def test_dropout_option_drops_in_train_mode_only():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3)), jnp.float32)
    dropped = models.get("wrn_tiny", num_classes=3, dropout_rate=0.3)
    variables = jax.jit(dropped.init, static_argnames="train")(jax.random.key(0), x, train=False)

    @functools.partial(jax.jit, static_argnums=0)
    def train_logits(model, seed):
        rngs = {"dropout": jax.random.key(seed)}
        return model.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)[0]

    a, b = train_logits(dropped, 1), train_logits(dropped, 2)
    assert not np.allclose(a, b)  # dropout draws from the 'dropout' rng in train mode
    np.testing.assert_array_equal(a, train_logits(dropped, 1))
    plain = models.get("wrn_tiny", num_classes=3)
    np.testing.assert_array_equal(train_logits(plain, 1), train_logits(plain, 2))
    # eval mode: no dropout
    eval_logits = jax.jit(lambda model: model.apply(variables, x, train=False), static_argnums=0)
    np.testing.assert_array_equal(eval_logits(dropped), eval_logits(plain))


def test_default_config_keeps_the_decay_out_of_sam():
    assert default_config().sam_decay_in_loss is False


@pytest.fixture(scope="module")
def resnet_init():
    """Real initial variables of a small ResNet with a 1000-way head (one jitted init)."""
    model = models.get("resnet_tiny", num_classes=1000, num_filters=16)
    x = jnp.zeros((1, 16, 16, 3), jnp.float32)
    return jax.jit(model.init, static_argnames="train")(jax.random.key(0), x, train=False)


def _std_within_sampling_error(values, std, z=5.0):
    # the sample std of n normals has relative standard error ≈ 1/√(2n)
    values = np.asarray(values, np.float64).ravel()
    assert abs(values.std() / std - 1) < z / np.sqrt(2 * values.size), (values.std(), std)
    assert abs(values.mean()) < z * std / np.sqrt(values.size)


def test_resnet_init_is_goyal_s(resnet_init):
    params = resnet_init["params"]
    # Goyal §5.1: the 1000-way FC layer from N(0, 0.01²), zero bias
    _std_within_sampling_error(params["head"]["kernel"], 0.01)
    np.testing.assert_array_equal(params["head"]["bias"], 0.0)
    # Goyal §5.1: the last BN γ of every residual block is 0, the others 1
    blocks = [k for k in params if k.startswith("ResNetBlock")]
    assert len(blocks) == 2
    for block in blocks:
        np.testing.assert_array_equal(params[block]["BatchNorm_1"]["scale"], 0.0)
        np.testing.assert_array_equal(params[block]["BatchNorm_0"]["scale"], 1.0)
    np.testing.assert_array_equal(params["bn_init"]["scale"], 1.0)
    # He et al. (2015) normal init of the convolutions, std √(2 / fan_out)
    kernel = params[blocks[1]]["Conv_1"]["kernel"]  # 3x3, 32 -> 32
    _std_within_sampling_error(kernel, np.sqrt(2.0 / (3 * 3 * kernel.shape[-1])))


def test_crop_padding_is_a_reflection():
    # Z&K §3: "padded by 4 pixels on each side, filling missing pixels with reflections"
    x = np.random.default_rng(0).standard_normal((16, 8, 8, 3)).astype(np.float32)
    out = np.asarray(data.random_crop_flip(x, jax.random.key(3), padding=4, flip=False))
    reflected = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    zero_padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))

    def crops(padded, n):
        return [padded[n, i : i + 8, j : j + 8] for i in range(9) for j in range(9)]

    for n in range(len(x)):
        assert any(np.array_equal(out[n], c) for c in crops(reflected, n))
    # power: some crop reaches into the border, where zero padding would differ
    assert not all(
        any(np.array_equal(out[n], c) for c in crops(zero_padded, n)) for n in range(len(x))
    )
    # the reflection does not repeat the edge pixel: padded row 3 is image row 1
    np.testing.assert_array_equal(reflected[:, 3, 4:12], x[:, 1])
    with pytest.raises(ValueError, match="padding"):
        data.random_crop_flip(x, jax.random.key(0), padding=-1)


def test_trainer_puts_the_decay_into_sam_only_when_asked():
    from nmelab.train import build_run

    config = default_config()
    config.weight_decay, config.weight_decay_mask = 5e-4, "no_bn_and_bias"
    config.regularizer, config.regularizer_params = "sam", {"rho": 0.05}
    assert build_run(config).regularizer.record()["weight_decay"] == 0.0
    config.sam_decay_in_loss = True
    record = build_run(config).regularizer.record()
    assert (record["weight_decay"], record["weight_decay_mask"]) == (5e-4, "no_bn_and_bias")
    config.regularizer, config.regularizer_params = "gradient_penalty", {"rho": 0.05}
    assert "weight_decay" not in build_run(config).regularizer.record()
