"""§4.3 sparsity, the eq. 20-21 estimator ablation, Fig. 5 at paper scale, mechanism from checkpoints.

End to end at ``quick`` scale on tiny stand-ins of the recipes (one epoch, one small hidden
layer), and each claim's verdict on synthetic results whose answer is known.
"""

import json
import types

import jax
import numpy as np
import pandas as pd
import pytest
from _synthetic import QUICK, fill

from nmelab.cli import main
from nmelab.experiments import base, mechanism, mechanism_checkpoints, recipes, sparsity
from nmelab.experiments.claims import points_table
from nmelab.experiments.results import load_results
from nmelab.experiments.verdicts import (
    INCONCLUSIVE,
    NOT_COMPUTED,
    NOT_REPRODUCED,
    REPRODUCED,
)


@pytest.fixture
def tiny_recipes(monkeypatch):
    """Every recipe shrunk to a one-epoch MLP with one hidden layer of 8 units, 2 seeds."""
    load = recipes.load

    def tiny(recipe, scale):
        config = load(recipe, scale)
        config.update(num_epochs=1.0, model_kwargs={"features": [8]})
        config["dataset_kwargs"] = {**config.get("dataset_kwargs", {}), "num_train": 512}
        return config

    monkeypatch.setattr(recipes, "load", tiny)
    setups = {k: dict(v) for k, v in sparsity._SETUP.items()}
    setups["quick"]["overrides"] = {}
    setups["quick"]["probe_batch_size"] = 64
    monkeypatch.setattr(sparsity, "_SETUP", setups)
    monkeypatch.setattr(sparsity, "BETAS", {**sparsity.BETAS, "quick": (1.0, 30.0)})


def _claims(root, name, scale=QUICK):
    table = points_table(base.get(name).points(scale), load_results(root))
    return {c.key: c for c in base.get(name).claims(table, scale, root)}


@pytest.mark.parametrize("name", ["sparsity", "estimators"])
def test_runs_end_to_end_at_quick_scale_on_tiny_models(tmp_path, tiny_recipes, name):
    from nmelab.experiments.pipeline import reproduce

    out = reproduce("quick", [name], tmp_path, workers=1, num_seeds=2)
    assert not out["sweep"].failed
    claims = json.loads((tmp_path / "claims.json").read_text())["claims"]
    assert {c["key"] for c in claims} == (
        {"sparsity"} if name == "sparsity" else {"est-st", "est-2p"}
    )
    assert all(c["verdict"] != NOT_COMPUTED for c in claims)
    assert (tmp_path / "figures" / f"{name}.png").is_file()
    if name == "sparsity":
        stats = sparsity.statistics_table(None, base.get_scale("quick", num_seeds=2), tmp_path)
        overall = stats[stats["layer"] == ""]
        assert len(overall) == 4 and set(overall["beta"]) == {1.0, 30.0}
        assert (overall["fraction_above"] > 0).all() and (overall["top_k_share"] <= 1).all()
        head = stats[stats["layer"] == "['head']"]  # linear in its weights: diag NME is 0
        assert (head["fraction_above"] == 0).all()


def _stats_table(share_by_beta, sd, num_seeds=5, seed=0):
    rng = np.random.default_rng(seed)
    rows = [
        {"beta": beta, "seed": s, "layer": "", "top_k_share": share + rng.normal(0, sd),
         "kurtosis": 3.0, "fraction_above": 0.5, "max_abs": 1.0, "mean_abs": 0.1}
        for beta, share in share_by_beta.items()
        for s in range(num_seeds)
    ]  # fmt: skip
    return pd.DataFrame.from_records(rows)


@pytest.mark.parametrize(
    ("shares", "sd", "expected"),
    [
        ({1.0: 0.05, 30.0: 0.20}, 0.01, REPRODUCED),  # spikier by 0.15 > margin 0.05
        ({1.0: 0.05, 30.0: 0.06}, 0.002, NOT_REPRODUCED),  # a rise, but bounded below 0.05
        ({1.0: 0.10, 30.0: 0.05}, 0.005, NOT_REPRODUCED),  # less spiky
        ({1.0: 0.05, 30.0: 0.10}, 0.10, INCONCLUSIVE),  # too noisy to tell
    ],
)
def test_sparsity_claim_on_synthetic_statistics(shares, sd, expected):
    (claim,) = sparsity.sparsity_claims(_stats_table(shares, sd), (1.0, 30.0), 0)
    assert claim.group == "analysis" and claim.margin == sparsity.SHARE_MARGIN
    assert claim.verdict == expected


def test_sparsity_claim_with_a_missing_task_is_not_computed():
    (claim,) = sparsity.sparsity_claims(_stats_table({1.0: 0.05, 30.0: 0.2}, 0.01), (1.0, 30.0), 1)
    assert claim.verdict == NOT_COMPUTED


@pytest.mark.parametrize(
    ("gap", "expected"), [(0.0, REPRODUCED), (4.0, NOT_REPRODUCED)]
)  # fmt: skip
def test_estimator_equivalence_claims_on_synthetic_results(tmp_path, gap, expected):
    def accuracy(line, x, panel):
        return 70.0 + (gap if "straight-through" in line or "2 probes" in line else 0.0)

    fill(tmp_path, ["estimators"], accuracy)
    claims = _claims(tmp_path, "estimators")
    assert claims["est-st"].verdict == claims["est-2p"].verdict == expected
    assert {c.group for c in claims.values()} == {"secondary"}


@pytest.fixture
def paper(tmp_path):
    data = tmp_path / "data"
    (data / "cifar10").mkdir(parents=True)
    (data / "imagenet").mkdir()
    return base.get_scale("paper", str(data))


def test_fig5_paper_scale_claims_every_panel_and_the_imagenet_gain(tmp_path, paper):
    def accuracy(line, x, panel):
        if "GN" in line and x > 0:
            return 77.0 + (1.6 if "ImageNet" in panel else 0.0)
        return 76.0

    fill(tmp_path / "good", ["fig5"], accuracy, scale=paper, sd=0.1)
    claims = _claims(tmp_path / "good", "fig5", paper)
    assert claims["fig5a"].verdict == claims["fig5b"].verdict == REPRODUCED
    assert claims["fig5-imagenet"].verdict == REPRODUCED
    assert claims["fig5-imagenet"].group == "primary"

    def relu_imagenet_fails(line, x, panel):  # GN-trace loses on one panel only
        return accuracy(line, x, panel) - (4.0 if panel == "ImageNet, ReLU" and "GN" in line else 0)

    fill(tmp_path / "bad", ["fig5"], relu_imagenet_fails, scale=paper, sd=0.1)
    claims = _claims(tmp_path / "bad", "fig5", paper)
    assert claims["fig5a"].verdict == NOT_REPRODUCED  # "consistently": a required part fails
    assert claims["fig5-imagenet"].verdict == REPRODUCED  # GELU panel


def test_paper_plan_lists_fig5_on_imagenet_and_the_new_experiments(capsys):
    assert main(["reproduce", "--plan", "--json", "--scale", "paper"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    fig5 = [r for r in runs if "fig5" in r["experiments"]]
    for act in ("relu", "gelu"):
        assert any(
            r["recipe"] == "configs/imagenet_resnet50.py"
            and f"resnet50-{act}-gn_trace" in r["run_id"]
            for r in fig5
        ), act
    assert any("sparsity" in r["experiments"] for r in runs)
    assert any("estimators" in r["experiments"] for r in runs)


def test_mechanism_at_paper_measures_the_fig2_checkpoints(paper):
    points = mechanism.points(paper)
    assert {p.panel for p in points} == {"CIFAR-10", "ImageNet"}
    for point in points:
        for spec in point.specs:
            assert spec.runner == "nmelab.experiments.mechanism_checkpoints:run"
            assert spec.config["training"]["num_epochs"] in (200.0, 300.0)  # the Fig. 2 recipe
    fig2 = {s.run_id for p in base.get("fig2").points(paper) if p.x == 0 for s in p.specs}
    assert {s.config["checkpoint_run_id"] for p in points for s in p.specs} == fig2


def test_mechanism_checkpoint_runner_writes_a_record_the_claims_read(tmp_path, monkeypatch):
    import nmelab.train
    from nmelab.train import build_run, config_from_dict, restore_state

    config = recipes.load(recipes.Recipe("mnist1d_mlp.py", "scale=quick"), QUICK)
    config.update(num_epochs=1.0, model_kwargs={"features": [8]}, num_seeds=1)
    config["dataset_kwargs"] = {"num_train": 512}
    (training,) = recipes.training_specs(
        config, recipes.Recipe("mnist1d_mlp.py"), activation="gelu"
    )
    train_dir = tmp_path / "runs" / training.run_id
    summary = recipes.train_runner(dict(training.config), str(train_dir))
    (train_dir / "result.json").write_text(
        json.dumps({**training.to_json(), "summary": summary, "elapsed_s": 1.0})
    )
    seen = []

    def load_trained(workdir, step=None, seed=0):  # the trainer's restore API, stood in for
        seen.append((workdir, step, seed))
        cfg = config_from_dict(training.config)
        run = build_run(cfg)
        state = restore_state(cfg, workdir)
        params, stats = jax.tree.map(lambda leaf: leaf[seed], (state.params, state.batch_stats))
        return types.SimpleNamespace(
            config=cfg, step=int(state.step), objective=run.eval_objective(stats),
            params=params, dataset=None,
        )  # fmt: skip

    monkeypatch.setattr(nmelab.train, "load_trained", load_trained, raising=False)
    spec = mechanism_checkpoints.measurement_spec(training, (0.01, 0.1), 64)
    workdir = tmp_path / "runs" / spec.run_id
    workdir.mkdir(parents=True)
    result = mechanism_checkpoints.run(dict(spec.config), str(workdir))
    assert seen == [(train_dir, None, 0)] and result["seeds"] == summary["seeds"]
    mechanism_checkpoints.validate(str(workdir), result)
    (workdir / "result.json").write_text(
        json.dumps({**spec.to_json(), "summary": result, "elapsed_s": 1.0})
    )
    table = points_table(
        [base.Point("GELU", 0.0, (spec,), "CIFAR-10")], load_results(tmp_path)
    )  # fmt: skip
    fid = mechanism.fidelity_table(table, tmp_path)
    assert set(fid["stage"]) == {"late"} and sorted(fid["rho"]) == [0.01, 0.1]
    assert ((fid["hessian_cosine"] > -1.0001) & (fid["hessian_cosine"] < 1.0001)).all()


@pytest.mark.parametrize("name", ["sparsity", "estimators"])
def test_no_results_are_not_computed(tmp_path, name):
    claims = _claims(tmp_path, name)
    assert claims and {c.verdict for c in claims.values()} == {NOT_COMPUTED}
