"""Config files, --set overrides and the `nmelab train` command line."""

import json
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from nmelab.cli import main
from nmelab.train import apply_overrides, default_config, load_config, train_and_evaluate
from nmelab.train.config import config_from_dict, config_to_dict, flat_keys, parse_value

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.py"))

# each paper-scale model's tiny variant and a synthetic stand-in of its data
TINY = {
    "mlp": ("mlp_tiny", None),
    "cnn1d": ("cnn_tiny", None),
    "cnn1d_bn": ("cnn_bn_tiny", None),
    "rescnn1d": ("rescnn_tiny", None),
    "wrn_16_4": ("wrn_tiny", (32, 32, 3)),
    "wrn_28_10": ("wrn_tiny", (32, 32, 3)),
    "resnet50": ("resnet_tiny", (32, 32, 3)),
}
INPUT_SHAPES = {"digits": (64,), "mnist1d": (40,)}


def test_every_recipe_is_there():
    assert {
        "digits_mlp",
        "mnist1d_mlp",
        "mnist1d_cnn",
        "mnist1d_cnn_bn",
        "mnist1d_rescnn",
        "cifar10_wrn16_4",
        "cifar10_wrn28_10",
        "imagenet_resnet50",
    } <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_has_every_key_and_documents_its_command(name):
    path = REPO / "configs" / f"{name}.py"
    config = load_config(path)
    assert set(flat_keys(default_config())) <= set(flat_keys(config))
    source = path.read_text()
    assert f"nmelab train --config configs/{name}.py" in source
    assert "Expected" in source or "expected" in source
    # JSON round trip (config.json)
    assert config_to_dict(config_from_dict(config_to_dict(config))) == config_to_dict(config)


def test_paper_recipes_hyperparameters():
    wrn = load_config(REPO / "configs/cifar10_wrn28_10.py")
    assert (wrn.model, wrn.learning_rate, wrn.momentum, wrn.nesterov) == (
        "wrn_28_10",
        0.1,
        0.9,
        True,
    )
    assert (wrn.weight_decay, wrn.batch_size, wrn.num_epochs) == (5e-4, 128, 200.0)
    assert wrn.lr_schedule == "cosine" and wrn.augment
    resnet = load_config(REPO / "configs/imagenet_resnet50.py")
    assert resnet.learning_rate == pytest.approx(0.1 * resnet.batch_size / 256)
    assert (resnet.warmup_epochs, resnet.momentum, resnet.weight_decay) == (5.0, 0.9, 1e-4)
    assert resnet.lr_schedule == "cosine"


# cifar10_wrn16_4 steps the same tiny model as cifar10_wrn28_10: opt-in, to keep the default fast.
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n == "cifar10_wrn16_4" else n for n in CONFIGS],
)
def test_config_takes_one_step_with_its_tiny_model(name, tmp_path):
    config = load_config(REPO / "configs" / f"{name}.py")
    tiny_model, shape = TINY[config.model]
    shape = shape or INPUT_SHAPES[config.dataset]
    config = apply_overrides(
        config,
        {
            "dataset": "synthetic",
            "dataset_kwargs": {"shape": shape, "num_train": 8, "num_test": 4},
            "data_dir": None,
            "model": tiny_model,
            "batch_size": 8,
            "eval_batch_size": 8,
            "num_epochs": 1.0,
            "warmup_epochs": 0.0,
            "progress": False,
            # ghost BatchNorm groups must divide the batch of 8
            **({"model_kwargs.bn_batch": 4} if "bn_batch" in config.model_kwargs else {}),
        },
    )
    summary = train_and_evaluate(config, tmp_path)
    assert summary["steps"] == 1
    assert summary["status"][0] in ("ok", "collapsed")
    assert np.isfinite(summary["test_loss"][0])


def test_parse_value():
    assert parse_value("0.1") == 0.1
    assert parse_value("True") is True
    assert parse_value("(32, 32, 3)") == (32, 32, 3)
    assert parse_value("{'rho': 0.1}") == {"rho": 0.1}
    assert parse_value("gelu") == "gelu"
    assert parse_value("None") is None


def test_apply_overrides_nested_free_form_and_types():
    config = apply_overrides(
        default_config(),
        [
            "learning_rate=1",  # int into a float key
            "curvature.every_steps=10",
            "regularizer=sam",
            "regularizer_params.rho=0.05",
            "activation_params={'beta': 3.0}",
            "curvature.fidelity_rhos=[0.01, 0.1]",
        ],
    )
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert config.curvature.every_steps == 10
    assert config.regularizer_params.to_dict() == {"rho": 0.05}
    assert config.activation_params.to_dict() == {"beta": 3.0}
    assert config.curvature.fidelity_rhos == (0.01, 0.1)
    assert default_config().learning_rate == 0.1  # the input is not modified
    assert isinstance(config, ml_collections.ConfigDict)


def test_unknown_key_names_near_matches():
    with pytest.raises(KeyError, match="did you mean 'learning_rate'"):
        apply_overrides(default_config(), ["learning_rat=0.1"])
    with pytest.raises(KeyError, match="curvature.every_steps"):
        apply_overrides(default_config(), ["curvature.every_step=5"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(default_config(), ["learning_rate"])
    with pytest.raises(TypeError, match="num_seeds"):
        apply_overrides(default_config(), ["num_seeds=abc"])


def _train_digits(workdir, *sets):
    args = ["train", "--config", str(REPO / "configs/digits_mlp.py"), "--workdir", str(workdir)]
    for item in sets:
        args += ["--set", item]
    return main(args)


def test_cli_reports_an_unknown_key(capsys, tmp_path):
    assert _train_digits(tmp_path, "num_epoch=3") == 2
    err = capsys.readouterr().err
    assert "unknown config key 'num_epoch'" in err and "did you mean 'num_epochs'" in err
    assert not any(tmp_path.iterdir())  # nothing was started


def test_cli_reports_a_missing_config_file(capsys, tmp_path):
    assert main(["train", "--config", str(tmp_path / "nope.py"), "--workdir", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_trains_and_prints_the_outcome(capsys, tmp_path):
    code = _train_digits(
        tmp_path, "model=mlp_tiny", "num_epochs=1", "progress=False", "num_seeds=2"
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "seed 0: ok: test accuracy" in out and "seed 1:" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert json.loads((tmp_path / "config.json").read_text())["model"] == "mlp_tiny"
    assert summary["seeds"] == [0, 1]


@pytest.mark.parametrize(
    ("name", "arg"),
    [("mnist1d_mlp", "scale=quick"), ("mnist1d_mlp", "scale=small"),
     ("mnist1d_cnn_bn", "scale=quick"), ("mnist1d_rescnn", "scale=small")],
)  # fmt: skip
def test_reproduce_recipes_load_per_scale(name, arg):
    from nmelab.experiments.recipes import Recipe, recipe_dict

    config = recipe_dict(Recipe(f"{name}.py", arg))
    standalone = config_to_dict(load_config(REPO / "configs" / f"{name}.py"))
    assert config["checkpoint_every_steps"] == 0 and config["eval_every_epochs"] == 0
    assert config["learning_rate"] == standalone["learning_rate"]
    assert config["model"] == standalone["model"]
    if arg == "scale=small":
        assert config["dataset_kwargs"]["num_test"] == 10000
