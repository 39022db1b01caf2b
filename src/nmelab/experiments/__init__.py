"""Reproduce the paper: every figure from one command, with seeds, stored results and verdicts.

``nmelab reproduce`` (:func:`reproduce`) runs the named experiments at a scale, skipping every
task that already has a result, then writes ``report.md`` / ``report.html`` (every figure, every
claim with its measured effect, 95 % interval and verdict) and ``claims.json``.

Experiments (:data:`EXPERIMENT_NAMES`)
--------------------------------------
``fig1``  loss and NME-norm landscapes over two weights of one layer (exact, float64);
``fig2``  accuracy vs ρ, p = 1 gradient penalty, ReLU vs GELU;
``fig3``  accuracy vs β of β-GELU, SGD and the penalty;
``fig4``  augmented ReLU and diminished GELU under the penalty;
``fig5``  weight noise, Hessian-, GN- and NME-trace penalties vs σ²;
``fig6``  SAM vs penalty SAM, ReLU and GELU;
``b4``    penalty USAM at ρ = η/2 vs GD at 2η on a quadratic (exact);
``mechanism``  second-order fidelity cos(ρHu, Δg) vs ρ per activation, early and late in training.

Scales, commands and expected times
-----------------------------------
``quick`` - MNIST-1D generated locally (no download), CPU, 3 seeds per grid point, 89 tasks::

    nmelab reproduce --scale quick --out repro_quick

Measured end to end (fresh ``--out``, ``time``) twice on the 2-core CPU of the development
machine while it was shared with other jobs (1-min load average 6-14): 15 min 25 s and 14 min 24 s
wall, 16.1 and 13.3 min of CPU; on an idle 2-core machine expect about 8-10 min. Runs are not
bitwise identical between invocations on this CPU (accuracies move by ~0.1 point; a seed at the
edge of stability can switch between "collapsed" and "diverged"). CNN-BN (3 conv layers × 32 channels, 20 epochs) for Fig. 2/4/6, MLP 40-256-256-10
(60 epochs) for Fig. 3/5 and (20 epochs) the mechanism. Grids: ρ ∈ {0, 0.1, 0.3, 1}; augmented
ReLU / diminished GELU at ρ ∈ {0.3, 1}; SAM at ρ ∈ {0.1, 0.3, 1}; β ∈ {1, 3, 10, 30} at ρ = 0.1
(the paper's value, primary) and 0.3 (the pilot's); σ² ∈ {0, 1e-3, 3e-3, 1e-2}.

``small`` - 5 seeds, extended grids (ρ up to 2, six σ², augmented ReLU at β = 1 and 3), the
residual BN CNN ``rescnn1d`` with weight decay for Fig. 2/4/6, a half-learning-rate check of
Fig. 2, 5-probe Hessian/NME-trace penalties, a 10k-example test set, the mechanism also on the
CNN-BN; 239 tasks::

    nmelab reproduce --scale small --out repro_small --workers 2

Estimated (from per-step costs measured on the same CPU, not from a full run): about 5 CPU-hours,
so 2-3 h wall with 2 workers on a 2-core machine; the residual-CNN penalty runs (90 tasks of about
2 min each) dominate. On a GPU it should be far shorter (not measured: no GPU was available).

``paper`` - the paper's setups: CIFAR-10 WRN-28-10 (Zagoruyko & Komodakis, cosine decay, 200
epochs) and ImageNet ResNet-50 (Goyal et al., batch 1024, cosine decay, 300 epochs), 5 seeds,
data from ``--data-dir`` (``DIR/cifar10``, ``DIR/imagenet``); 382 tasks (260 WRN-28-10 runs of
6-10 GPU-hours each, 120 ResNet-50 runs of days each)::

    nmelab reproduce --scale paper --data-dir /data --out repro_paper --shard $I/$N

Shard it over a cluster job array (``--shard i/n``, ``0 ≤ i < n``, the same ``--scale`` and
``--experiments`` for every shard), then run the same command once without ``--shard`` (or with
``--report-only``) to write the report.

Seeds: MLP tasks train their seeds vmapped in one run (the trainer's ``num_seeds``); CNN tasks run
one seed per task (see :data:`nmelab.experiments.registry.SEED_PACKING` for the measurements
behind that choice). JAX's persistent compilation cache (``OUT/.jax_cache``) lets tasks that differ
only in seed, ρ or σ share compiled code across worker processes and reruns.

Every result is a ``result.json`` written atomically in ``OUT/runs/<run_id>/``; killing the
command (even with SIGKILL) and rerunning it loses and duplicates nothing. ``load_results(OUT)``
gives every run as a DataFrame (one row per seed); ``nmelab reproduce --export-csv FILE`` writes
it as CSV.

Honesty rules: the grids, seeds and verdict rules are fixed in the code before the runs; the
report states every claim's verdict, including "not reproduced" and "inconclusive at this
scale" (:mod:`nmelab.experiments.verdicts`).
"""

from nmelab.experiments.pipeline import reproduce
from nmelab.experiments.registry import EXPERIMENT_NAMES, SCALES, get, points_for, tasks_for
from nmelab.experiments.results import load_results
from nmelab.experiments.sweep import RunSpec, parse_shard, run_sweep, shard_runs

__all__ = [
    "EXPERIMENT_NAMES",
    "SCALES",
    "RunSpec",
    "get",
    "load_results",
    "parse_shard",
    "points_for",
    "reproduce",
    "run_sweep",
    "shard_runs",
    "tasks_for",
]
