"""``nmelab analyze``: the H / GN / NME split of a small MLP on scikit-learn's digits, in one go.

Trains an MLP briefly (SGD with momentum) and then, on a fixed batch of training data and in float64:

* estimates ``tr H``, ``tr GN`` and ``tr NME`` on shared probes (± stderr), with the exact traces
  and the sampled-label GN trace (eq. 20) beside them;
* finds ``λ_min`` and ``λ_max`` of each by Lanczos;
* measures the sparsity of the exact NME diagonal;
* writes ``spectral_density.png`` (SLQ densities of H, GN, NME) and ``nme_diagonal_vs_beta.png``
  (NME-diagonal statistics of β-GELU MLPs trained the same way, across β) into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_BETAS = (1.0, 3.0, 10.0, 30.0, 100.0)
HIDDEN = (32, 32)
BETA_ACTIVATIONS = ("beta_gelu", "augmented_relu")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``analyze`` sub-command to ``subparsers``."""
    parser = subparsers.add_parser(
        "analyze",
        help="train a small MLP on digits and analyse its Hessian, Gauss-Newton and NME",
        description=(
            "Train a 64-32-32-10 MLP briefly on scikit-learn's digits, then report tr H, tr GN, "
            "tr NME (± stderr), their extreme eigenvalues and the sparsity of the NME diagonal, "
            "and write spectral_density.png and nme_diagonal_vs_beta.png."
        ),
    )
    parser.add_argument("--steps", type=_positive_int, default=300, help="SGD steps (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--activation",
        default="gelu",
        help="activation of the analysed MLP, a name of nmelab.activations (default gelu)",
    )
    parser.add_argument(
        "--beta",
        type=float,
        default=1.0,
        help="beta for --activation beta_gelu or augmented_relu (default 1)",
    )
    parser.add_argument(
        "--num-probes",
        type=_positive_int,
        default=30,
        help="Hutchinson probes for the traces (default 30); SLQ uses a third of them",
    )
    parser.add_argument(
        "--num-iters", type=_positive_int, default=40, help="Lanczos steps (default 40)"
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=256,
        help="training examples the curvature is measured on (default 256)",
    )
    parser.add_argument(
        "--betas",
        type=float,
        nargs="+",
        default=list(DEFAULT_BETAS),
        metavar="BETA",
        help="beta values of the beta-GELU sweep (default 1 3 10 30 100)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("analyze_out"),
        metavar="DIR",
        help="output folder for the figures (default analyze_out)",
    )
    # A --checkpoint option (trainer work) plugs in here: see _model_and_params.
    parser.set_defaults(run_fn=run)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


@dataclasses.dataclass(frozen=True)
class Trained:
    """A trained model, ready for analysis (float64 params and batch)."""

    objective: Any
    params: Any
    batch: tuple[Any, Any]
    train_accuracy: float
    test_accuracy: float
    label: str


def run(args: argparse.Namespace) -> int:
    """Run the analysis; return the exit code."""
    import jax

    from nmelab import activations

    if args.activation not in activations.names():
        print(
            f"nmelab analyze: error: --activation must be one of {', '.join(activations.names())}, "
            f"got {args.activation!r}",
            file=sys.stderr,
        )
        return 2
    if any(not b > 0 for b in args.betas) or not args.beta > 0:
        print("nmelab analyze: error: --beta and --betas must be > 0", file=sys.stderr)
        return 2
    jax.config.update("jax_enable_x64", True)  # the analysis runs in float64
    return _analyze(args)


def _same_model(args: argparse.Namespace, beta: float) -> bool:
    """Whether β-GELU at ``beta`` is the analysed model (GELU is β-GELU at β = 1, eq. 13)."""
    if args.activation == "beta_gelu":
        return beta == args.beta
    return args.activation == "gelu" and beta == 1.0


def _activation_params(name: str, beta: float) -> dict[str, float]:
    return {"beta": float(beta)} if name in BETA_ACTIVATIONS else {}


def _model_and_params(args: argparse.Namespace, activation: str, beta: float) -> Trained:
    """Train the MLP for ``args.steps`` steps; a ``--checkpoint`` option will restore params here."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import nmelab
    from nmelab import data, models

    dataset = data.get("digits")
    params_kwargs = _activation_params(activation, beta)
    model = models.get(
        "mlp",
        features=HIDDEN,
        num_classes=dataset.num_classes,
        activation=activation,
        activation_params=params_kwargs,
    )

    def apply_fn(params, x):
        return model.apply({"params": params}, x)

    objective = nmelab.Objective(apply_fn, "cross_entropy")
    x_train = jnp.asarray(dataset.x_train, jnp.float32)
    y_train = jnp.asarray(dataset.y_train)
    key = jax.random.key(args.seed)
    init_key, batch_key = jax.random.split(key)
    params = model.init(init_key, x_train[:1])["params"]
    optimizer = optax.sgd(optax.cosine_decay_schedule(0.1, args.steps), momentum=0.9)

    @jax.jit
    def train(params, key):
        def step(carry, k):
            params, opt_state = carry
            index = jax.random.randint(k, (128,), 0, x_train.shape[0])
            grads = jax.grad(objective.value)(params, (x_train[index], y_train[index]))
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        keys = jax.random.split(key, args.steps)
        (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), keys)
        return params

    params = train(params, batch_key)

    def accuracy(x, y):
        logits = apply_fn(params, jnp.asarray(x, jnp.float32))
        return float(np.mean(np.asarray(jnp.argmax(logits, -1)) == np.asarray(y)))

    params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    num = min(args.batch_size, x_train.shape[0])
    batch = (jnp.asarray(dataset.x_train[:num], jnp.float64), jnp.asarray(dataset.y_train[:num]))
    label = activation + (f"(β={beta:g})" if params_kwargs else "")
    return Trained(
        objective,
        params64,
        batch,
        accuracy(dataset.x_train, dataset.y_train),
        accuracy(dataset.x_test, dataset.y_test),
        label,
    )


def _analyze(args: argparse.Namespace) -> int:
    import jax
    import numpy as np
    from jax.flatten_util import ravel_pytree
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    import nmelab
    from nmelab import estimators, plotting

    console = Console()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    names = ("hessian", "gauss_newton", "nme")
    makers = {"hessian": nmelab.hessian, "gauss_newton": nmelab.gauss_newton, "nme": nmelab.nme}
    betas = list(args.betas)
    total = 6 + 2 * len(betas)
    key = jax.random.key(args.seed + 1)
    keys = dict(zip(("trace", "gn", "eig", "slq"), jax.random.split(key, 4), strict=True))
    num_slq = max(2, args.num_probes // 3)

    with Progress(
        TextColumn("[bold]{task.description:<44}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("training", total=total)

        def advance(description: str) -> None:
            progress.update(task, advance=1, description=description)

        trained = _model_and_params(args, args.activation, args.beta)
        objective, params, batch = trained.objective, trained.params, trained.batch
        ops = {name: makers[name](objective, params, batch) for name in names}
        advance("traces on shared probes")

        split = nmelab.trace_split(objective, params, batch, keys["trace"], args.num_probes)
        gn_sampled = nmelab.gn_trace_sampled(
            objective, params, batch, keys["gn"], args.num_probes, form="per_example"
        )
        advance("exact diagonals")

        diagonals = estimators.diagonal_split(objective, params, batch).as_dict()
        advance("Lanczos extremes")

        eigen = {
            name: nmelab.eigenpairs(ops[name], 2, "both", keys["eig"], args.num_iters)
            for name in names
        }
        advance("spectral densities (SLQ)")

        densities = {
            name: nmelab.spectral_density(ops[name], keys["slq"], num_slq, args.num_iters)
            for name in names
        }
        extremes = {
            name: (float(e.eigenvalues[0]), float(e.eigenvalues[-1])) for name, e in eigen.items()
        }
        plotting.plot_spectral_densities(
            densities,
            out / "spectral_density.png",
            extremes=extremes,
            title=(
                f"MLP 64-{'-'.join(map(str, HIDDEN))}-10, {trained.label}, digits, "
                f"{args.steps} SGD steps, N = {batch[0].shape[0]}"
            ),
        )
        advance("β sweep")

        sweep_stats, sweep_diags, sweep_accuracy = [], [], []
        for beta in betas:
            progress.update(task, description=f"β sweep: β-GELU β = {beta:g}")
            if _same_model(args, beta):  # β-GELU at this β is the analysed model: reuse it
                model, diag = trained, diagonals["nme"]
            else:
                model = _model_and_params(args, "beta_gelu", beta)
                op = nmelab.nme(model.objective, model.params, model.batch)
                diag = nmelab.diagonal(op, exact=True)
            sweep_stats.append(nmelab.diagonal_statistics(diag))
            sweep_diags.append(np.asarray(ravel_pytree(diag.value)[0]))
            sweep_accuracy.append(model.train_accuracy)
            progress.update(task, advance=2)
        reference = nmelab.diagonal_statistics(diagonals["nme"])
        plotting.plot_diagonal_statistics_vs_beta(
            betas,
            sweep_stats,
            out / "nme_diagonal_vs_beta.png",
            diagonals=sweep_diags,
            reference=(f"{trained.label} (analysed model)", reference),
            title=(
                "Exact NME diagonal of β-GELU MLPs (64-32-32-10 on digits, each trained for "
                f"{args.steps} SGD steps; N = {batch[0].shape[0]})"
            ),
        )
        advance("done")

    num_params, num = ops["hessian"].num_params, batch[0].shape[0]
    console.print(
        f"MLP 64-{'-'.join(map(str, HIDDEN))}-10 ({trained.label}) on digits after {args.steps} "
        f"SGD steps: train/test accuracy {trained.train_accuracy:.3f}/"
        f"{trained.test_accuracy:.3f}; curvature on N = {num} training examples, P = {num_params}."
    )
    table = Table(title="H = GN + NME (paper eq. 2)")
    table.add_column("matrix")
    table.add_column(f"trace, {args.num_probes} shared probes", justify="right")
    table.add_column("exact trace", justify="right")
    table.add_column("λ_min", justify="right")
    table.add_column("λ_max", justify="right")
    for name, est in split.as_dict().items():
        table.add_row(
            {"hessian": "H", "gauss_newton": "GN", "nme": "NME"}[name],
            f"{float(est.value):.4g} ± {float(est.stderr):.2g}",
            f"{float(np.sum(ravel_pytree(diagonals[name].value)[0])):.4g}",
            f"{float(eigen[name].eigenvalues[0]):.4g}",
            f"{float(eigen[name].eigenvalues[-1]):.4g}",
        )
    table.add_row(
        "GN, eq. 20",
        f"{float(gn_sampled.value):.4g} ± {float(gn_sampled.stderr):.2g}",
        "",
        "",
        "",
    )
    console.print(table)
    residual = max(float(np.max(np.asarray(e.residual_norms))) for e in eigen.values())
    console.print(
        f"Lanczos: {args.num_iters} steps, largest residual ‖Av − λv‖ = {residual:.1e}. "
        f"GN, eq. 20: sampled labels, per-example form, {args.num_probes} draws."
    )
    stats = nmelab.diagonal_statistics(diagonals["nme"])
    console.print(
        f"Exact NME diagonal: {stats.fraction_above:.1%} of entries above 1e-3·max|d|, "
        f"excess kurtosis {stats.kurtosis:.3g}, top-1% ({stats.top_k} entries) hold "
        f"{stats.top_k_share:.1%} of Σ|d|."
    )
    sweep = Table(title="Exact NME diagonal of β-GELU MLPs across β (section 4.3)")
    for column in ("β", "train acc", "frac > 1e-3·max", "excess kurtosis", "top-1% share"):
        sweep.add_column(column, justify="right")
    for beta, stats, acc in zip(betas, sweep_stats, sweep_accuracy, strict=True):
        sweep.add_row(
            f"{beta:g}",
            f"{acc:.3f}",
            f"{stats.fraction_above:.3f}",
            f"{stats.kurtosis:.3g}",
            f"{stats.top_k_share:.3f}",
        )
    console.print(sweep)
    console.print(
        f"wrote {out / 'spectral_density.png'} and {out / 'nme_diagonal_vs_beta.png'} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0
