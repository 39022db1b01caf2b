"""``nmelab analyze``: render :func:`nmelab.analysis.analyze` for a trained run, or for a quick demo.

``nmelab analyze --workdir RUN [--step N]`` restores the final (or step ``N``) checkpoint of a
``nmelab train`` run with :func:`nmelab.train.load_trained` and analyses it on its own config's
model (eval mode) and data. Without ``--workdir`` it trains the demo, a small MLP on scikit-learn's
digits, with :func:`nmelab.train.train_and_evaluate` into ``OUT/runs/`` (rerunning reuses those
runs) and analyses that.

The analysis is exactly ``nmelab.analysis.analyze(objective, params, batch,
key=jax.random.key(--seed), num_probes=--num-probes, num_iters=--num-iters)`` in float64, with
``params`` the run's parameters cast to float64 and ``batch`` the first ``--batch-size`` training
examples (float64 inputs). ``OUT`` receives:

* ``analysis.json``: ``{"run": ..., "batch": ..., "seed": ..., "analysis": Analysis.to_dict()}``
  (and the demo's ``"beta_sweep"``);
* ``spectral_density.png`` (SLQ densities of H, GN and NME) and ``nme_diagonal.png`` (the NME
  diagonal and block norms per layer);
* for the demo, ``nme_diagonal_vs_beta.png``: the NME-diagonal statistics of β-GELU MLPs trained
  the same way, across β (section 4.3).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from nmelab.cli.errors import UsageError, check_output_dir

__all__ = ["register", "run"]

DEFAULT_BETAS = (1.0, 3.0, 10.0, 30.0, 100.0)
DEMO_FEATURES = (32, 32)
BETA_ACTIVATIONS = ("beta_gelu", "augmented_relu")
DEMO_DEFAULTS = {"epochs": 25.0, "activation": "gelu", "beta": 1.0, "betas": list(DEFAULT_BETAS)}
"""Options of the demo model; with ``--workdir`` they are an error (the run defines its model)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``analyze`` sub-command to ``subparsers``."""
    parser = subparsers.add_parser(
        "analyze",
        help="analyse the Hessian, Gauss-Newton and NME of a trained run (or of a demo MLP)",
        description=(
            "Report tr H, tr GN, tr NME (± stderr), their extreme eigenvalues, the NME diagonal's "
            "sparsity per layer and the spectral densities of a run trained with nmelab train "
            "(--workdir), or of a 64-32-32-10 MLP trained briefly on digits (the default demo); "
            "write analysis.json, spectral_density.png and nme_diagonal.png into --out."
        ),
        epilog="example: nmelab analyze --workdir runs/digits --out runs/digits/analysis",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        metavar="RUN",
        help="a nmelab train workdir to analyse (default: train and analyse the demo MLP)",
    )
    parser.add_argument(
        "--step",
        type=_non_negative_int,
        metavar="N",
        help="checkpoint step of --workdir (default: the final checkpoint)",
    )
    parser.add_argument(
        "--seed-index",
        type=_non_negative_int,
        default=0,
        metavar="I",
        help="which seed of a multi-seed run to analyse (default 0)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the analysis key (and of the demo run)"
    )
    parser.add_argument(
        "--num-probes",
        type=_int_at_least(2),
        default=30,
        help="Hutchinson probes for the traces (default 30); SLQ uses a third of them",
    )
    parser.add_argument(
        "--num-iters", type=_int_at_least(2), default=40, help="Lanczos steps (default 40)"
    )
    parser.add_argument(
        "--batch-size",
        type=_int_at_least(1),
        default=256,
        help="first training examples the curvature is measured on (default 256)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="output folder (default: RUN/analysis with --workdir, else analyze_out)",
    )
    demo = parser.add_argument_group("demo model (without --workdir)")
    demo.add_argument("--epochs", type=float, help="training epochs of the demo (default 25)")
    demo.add_argument(
        "--activation", help="activation of the demo MLP, a name of nmelab.activations (gelu)"
    )
    demo.add_argument("--beta", type=float, help="beta for beta_gelu or augmented_relu (1)")
    demo.add_argument(
        "--betas",
        type=float,
        nargs="+",
        metavar="BETA",
        help="beta values of the beta-GELU sweep (default 1 3 10 30 100)",
    )
    parser.set_defaults(run_fn=run)


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


_non_negative_int = _int_at_least(0)


@dataclasses.dataclass(frozen=True)
class _Model:
    """What is analysed: a restored run (``nmelab.train.TrainedRun``) and how it is described."""

    trained: Any
    label: str
    describe: dict[str, Any]


def run(args: argparse.Namespace) -> int:
    """Analyse the run (or the demo), print the table and write the JSON and PNGs; exit code."""
    demo = _check_arguments(args)
    out = check_output_dir(args.out or _default_out(args), arg="--out")
    import jax

    jax.config.update("jax_enable_x64", True)  # the analysis runs in float64
    if demo is None:
        model = _restore(args.workdir, args.step, args.seed_index)
    else:
        model = _train_demo(demo, args.seed, out, demo["activation"], demo["beta"])
    result, batch_size = _analyze(model, args)
    record = {
        "run": model.describe,
        "batch": {"split": "train", "first_examples": batch_size},
        "seed": args.seed,
        "analysis": result.to_dict(),
    }
    _write_figures(result, model, out)
    print(result.table())
    if demo is not None:
        record["beta_sweep"] = _beta_sweep(demo, args, out, model, result)
    from nmelab._io import write_json_atomic

    write_json_atomic(out / "analysis.json", record)
    print(f"wrote {out / 'analysis.json'} and the figures in {out}")
    return 0


def _default_out(args: argparse.Namespace) -> Path:
    return Path(args.workdir) / "analysis" if args.workdir else Path("analyze_out")


def _check_arguments(args: argparse.Namespace) -> dict[str, Any] | None:
    """The demo options (defaults filled in), or ``None`` for ``--workdir``; UsageError if wrong."""
    given = [name for name in DEMO_DEFAULTS if getattr(args, name) is not None]
    if args.workdir is not None:
        if given:
            flags = ", ".join(f"--{name}" for name in given)
            raise UsageError(f"{flags}: only for the demo model; --workdir analyses the run's own")
        if not Path(args.workdir).is_dir():
            raise UsageError(f"--workdir {args.workdir}: no such folder")
        return None
    if args.step is not None or args.seed_index:
        raise UsageError("--step and --seed-index need --workdir")
    from nmelab import activations

    demo = {
        name: default if getattr(args, name) is None else getattr(args, name)
        for name, default in DEMO_DEFAULTS.items()
    }
    if demo["activation"] not in activations.names():
        raise UsageError(
            f"--activation must be one of {', '.join(activations.names())}, "
            f"got {demo['activation']!r}"
        )
    if not demo["epochs"] > 0:
        raise UsageError(f"--epochs must be > 0, got {demo['epochs']}")
    if any(not b > 0 for b in (*demo["betas"], demo["beta"])):
        raise UsageError(f"--beta and --betas must be > 0, got {demo['beta']} and {demo['betas']}")
    return demo


def _restore(workdir: Path, step: int | None, seed_index: int) -> _Model:
    from nmelab import train

    try:
        trained = train.load_trained(workdir, step=step, seed=seed_index)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(f"--workdir {workdir}: {err}") from err
    config = trained.config
    label = f"{config.model} on {config.dataset}, step {trained.step}"
    describe = {
        "workdir": str(workdir),
        "step": trained.step,
        "seed_index": seed_index,
        "dataset": config.dataset,
        "model": config.model,
        "activation": config.activation,
    }
    return _Model(trained, label, describe)


def _demo_config(demo: dict[str, Any], seed: int, activation: str, beta: float):
    from nmelab.train import default_config

    config = default_config()
    config.dataset, config.model = "digits", "mlp"
    config.model_kwargs.features = DEMO_FEATURES
    config.activation = activation
    if activation in BETA_ACTIVATIONS:
        config.activation_params.beta = float(beta)
    config.num_epochs = float(demo["epochs"])
    config.seed = seed
    config.eval_every_epochs = 0
    config.progress = False
    return config


def _train_demo(demo: dict[str, Any], seed: int, out: Path, activation: str, beta: float) -> _Model:
    """Train (or reuse) the demo run of ``activation`` at ``beta`` under ``out/runs``."""
    from nmelab import train

    label = activation + (f"(β={beta:g})" if activation in BETA_ACTIVATIONS else "")
    name = activation + (f"_beta{beta:g}" if activation in BETA_ACTIVATIONS else "")
    workdir = out / "runs" / name
    try:
        summary = train.train_and_evaluate(_demo_config(demo, seed, activation, beta), workdir)
    except ValueError as err:  # a run of other settings already in this --out
        raise UsageError(f"--out {out}: {err}; choose another --out") from err
    trained = train.load_trained(workdir)
    describe = {
        "workdir": str(workdir),
        "step": trained.step,
        "dataset": "digits",
        "model": f"mlp {DEMO_FEATURES}",
        "activation": label,
        "train_accuracy": summary["train_accuracy"][0],
        "test_accuracy": summary["test_accuracy"][0],
    }
    print(
        f"demo: MLP 64-{'-'.join(map(str, DEMO_FEATURES))}-10 ({label}) on digits, "
        f"{trained.step} SGD steps: train/test accuracy {describe['train_accuracy']:.3f}/"
        f"{describe['test_accuracy']:.3f}"
    )
    return _Model(trained, f"MLP {label} on digits, step {trained.step}", describe)


def _float64_inputs(trained: Any, batch_size: int) -> tuple[Any, tuple[Any, Any]]:
    """The run's params and its first ``batch_size`` training examples, as float64."""
    import jax
    import jax.numpy as jnp

    dataset = trained.dataset
    if not hasattr(dataset, "x_train"):
        raise UsageError(
            f"--workdir: dataset {getattr(dataset, 'name', dataset)!r} is not held in memory; "
            "analyze needs an in-memory dataset (digits, mnist1d, synthetic, cifar10)"
        )
    num = min(batch_size, len(dataset.x_train))
    params = jax.tree.map(lambda leaf: jnp.asarray(leaf, jnp.float64), trained.params)
    batch = (jnp.asarray(dataset.x_train[:num], jnp.float64), jnp.asarray(dataset.y_train[:num]))
    return params, batch


def _analyze(model: _Model, args: argparse.Namespace):
    import jax

    from nmelab.analysis import analyze

    params, batch = _float64_inputs(model.trained, args.batch_size)
    print(f"analysing {model.label} on N = {batch[0].shape[0]} training examples ...")
    result = analyze(
        model.trained.objective,
        params,
        batch,
        key=jax.random.key(args.seed),
        num_probes=args.num_probes,
        num_iters=args.num_iters,
    )
    return result, int(batch[0].shape[0])


def _write_figures(result: Any, model: _Model, out: Path) -> None:
    from nmelab import plotting, plotting_analysis

    title = f"{model.label}, N = {result.num_examples}, P = {result.num_params}"
    plotting.plot_spectral_densities(
        result.spectral_densities,
        out / "spectral_density.png",
        extremes=result.extremes(),
        title=title,
    )
    plotting_analysis.plot_nme_diagonal(result, out / "nme_diagonal.png", title=title)


def _same_model(demo: dict[str, Any], beta: float) -> bool:
    """Whether β-GELU at ``beta`` is the analysed demo model (GELU is β-GELU at β = 1, eq. 13)."""
    if demo["activation"] == "beta_gelu":
        return beta == demo["beta"]
    return demo["activation"] == "gelu" and beta == 1.0


def _beta_sweep(
    demo: dict[str, Any], args: argparse.Namespace, out: Path, model: _Model, result: Any
) -> list[dict[str, Any]]:
    """NME-diagonal statistics of β-GELU demo MLPs across β; writes nme_diagonal_vs_beta.png."""
    import jax
    import numpy as np
    from jax.flatten_util import ravel_pytree

    from nmelab import diagonal_statistics, plotting
    from nmelab.analysis import nme_diagonal

    rows, statistics, diagonals = [], [], []
    for beta in demo["betas"]:
        if _same_model(demo, beta):  # β-GELU at this β is the analysed model: reuse it
            member, diag = model, result.nme_diagonal
        else:
            member = _train_demo(demo, args.seed, out, "beta_gelu", beta)
            params, batch = _float64_inputs(member.trained, args.batch_size)
            diag, _ = nme_diagonal(
                member.trained.objective, params, batch, key=jax.random.key(args.seed)
            )
        stats = diagonal_statistics(diag)
        statistics.append(stats)
        diagonals.append(np.asarray(ravel_pytree(diag.value)[0]))
        rows.append(
            {
                "beta": beta,
                "train_accuracy": member.describe["train_accuracy"],
                "statistics": dataclasses.asdict(stats),
            }
        )
    plotting.plot_diagonal_statistics_vs_beta(
        demo["betas"],
        statistics,
        out / "nme_diagonal_vs_beta.png",
        diagonals=diagonals,
        reference=(
            f"{model.describe['activation']} (analysed model)",
            result.nme_diagonal_statistics,
        ),
        title=f"NME diagonal of β-GELU MLPs on digits ({demo['epochs']:g} epochs each)",
    )
    for row in rows:
        stats = row["statistics"]
        print(
            f"β = {row['beta']:g}: train acc {row['train_accuracy']:.3f}, frac > 1e-3·max "
            f"{stats['fraction_above']:.3f}, excess kurtosis {stats['kurtosis']:.3g}, "
            f"top-1% share {stats['top_k_share']:.3f}"
        )
    return rows
