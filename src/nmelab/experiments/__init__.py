"""Reproduce the paper: every figure from one command, with seeds, stored results and verdicts.

``nmelab reproduce`` (:func:`reproduce`) runs the named experiments at a scale, skipping every
task that already has a valid result, then writes ``report.md`` / ``report.html`` (every figure,
every claim with its measured effect, 95 % interval, failed seeds and verdict) and
``claims.json``. ``nmelab reproduce --plan [--json]`` lists the runs without running them
(:func:`plan`).

Experiments (the registry, :func:`nmelab.experiments.base.names`)
-----------------------------------------------------------------
``fig1``  loss and NME-norm landscapes over two weights of one layer (exact, float64);
``fig2``  accuracy vs ρ, p = 1 gradient penalty, ReLU vs GELU;
``fig3``  accuracy vs β of β-GELU, SGD and the penalty;
``fig4``  augmented ReLU and diminished GELU under the penalty;
``fig5``  weight noise, Hessian-, GN- and NME-trace penalties vs σ² (at ``paper``: CIFAR-10 and
          ImageNet, GELU and ReLU, and the "+1.6 % on ImageNet" claim);
``fig6``  SAM vs penalty SAM, ReLU and GELU;
``b4``    penalty USAM at ρ = η/2 vs GD at 2η on a quadratic (exact);
``mechanism``  second-order fidelity cos(ρHu, Δg) vs ρ per activation, early and late in training
          (at ``paper``: measured on the checkpoints of Fig. 2's SGD runs, end of training);
``sparsity``  §4.3: the NME diagonal of trained β-GELU models (exact entries; fraction above
          1e-3·max, excess kurtosis, top-1 % mass share, per layer; layer block norms) vs β;
``estimators``  eq. 20-21 ablation: the GN-trace penalty with the straight-through estimator, and
          the Hessian-trace penalty with 1 vs 2 probes (claims of no difference).

Adding an experiment is one file (build an :class:`~nmelab.experiments.base.Experiment`, join
the registry with ``@register``) plus one import line below; the command line, the plan and the
report pick it up. Training recipes come from the repository's ``configs/`` only
(:mod:`nmelab.experiments.recipes`).

Claims and verdicts
-------------------
Every claim's verdict goes through :func:`verdict` (directional claims) or
:func:`equivalence_verdict` (the paper's "≈" claims); a claim with a missing or damaged run is
"not computed". The report groups the claims: the paper's primary training claims (the headline,
with Holm-adjusted verdicts beside the raw ones), secondary/post-hoc claims, exact identities
(Fig. 1, App. B.4), the paper's analysis claims (§4.3's sparse NME diagonal: a statement about
measured curvature, not accuracy) and our own claims (the mechanism). Each claim counts its diverged and
collapsed seeds and states the verdict without them (:mod:`nmelab.experiments.claims`).

Scales, commands and expected times
-----------------------------------
``quick`` - MNIST-1D generated locally (no download), CPU, 3 seeds per grid point
(``nmelab reproduce --plan`` lists the tasks and a compute estimate)::

    nmelab reproduce --scale quick --out repro_quick

The wall time on an idle 2-core machine is stated in the README (measured there, end to end).
Runs are not bitwise identical between invocations on this CPU (accuracies move by ~0.1 point; a
seed at the edge of stability can switch between "collapsed" and "diverged"). Recipes:
``configs/mnist1d_cnn_bn.py`` (CNN-BN, 3 conv layers × 32 channels) for Fig. 2/4/6,
``configs/mnist1d_mlp.py`` (MLP 40-256-256-10) for Fig. 3/5 and (20 epochs) the mechanism.
Grids (at this scale every ρ and σ² enters a claim; the full curves are the ``small`` scale's):
ρ ∈ {0, 0.3, 1} (ρ* = 0.3); augmented ReLU / diminished GELU at ρ ∈ {0.3, 1}; SAM at
ρ ∈ {0.3, 1}; β ∈ {1, 3, 10, 30} at ρ = 0.1 (the paper's value, primary) and 0.3;
σ² ∈ {0, 3e-3, 1e-2}; CNN-BN 15 epochs; MLP 40 epochs; Fig. 5 without our NME-trace line. ``sparsity``: MLP
40-32-32-10 (30 epochs; the exact NME diagonal of all 2,698 parameters), β ∈ {1, 3, 10, 30};
``estimators``: σ² = 3e-3 (its GN-trace and 1-probe Hessian-trace runs are Fig. 5's).

``small`` - the scale designed to decide (fixed on 2026-12-02, before any ``small`` run): 5 seeds,
a 10,000-example test set (at quick, 1,000 test examples add a binomial 1.4-point standard
deviation per MLP seed), the residual BN CNN ``rescnn1d`` with weight decay for Fig. 2/4/6 on
2,000 training examples (``configs/mnist1d_rescnn.py``), ρ ∈ {0, 0.1, 0.3, 1} with the paper's
ρ* = 0.1, augmented ReLU / diminished GELU at ρ ∈ {0.1, 0.3}, SAM at ρ ∈ {0.1, 1}, β ∈ {1, 2, 3,
5, 10, 30}, six σ² with 5-probe Hessian/NME-trace penalties, the mechanism also on the CNN-BN,
``sparsity`` on an MLP 40-64-64-10 at β ∈ {1, 2, 3, 5, 10, 30}, ``estimators`` at
σ² ∈ {3e-3, 1e-2}::

    nmelab reproduce --scale small --out repro_small --workers 2

Power estimate from the ``quick`` run (3 seeds; standard errors scaled by √(3/n), Welch degrees
of freedom scaled likewise). A verdict is sure to be decisive once the 95 % CI is narrower than
the margin (half-width ≤ margin/2); the seeds that needs, and the seeds for 80 % power at the
quick effect size (directional claims), were:

====================  ======  ==========================  ===================
claim                 quick   seeds for a decisive CI     80 % power at the
                      ± CI                                quick effect
====================  ======  ==========================  ===================
fig2                  0.86    7                           116 (effect −0.17)
fig2-rho0 (≈)         0.80    6                           –
fig3                  2.13    31                          – (effect ≈ 0)
fig3-sgd (≈)          2.46    20                          –
fig4a                 1.82    14                          20
fig4a-gelu (≈)        1.00    7                           –
fig4b                 0.98    7                           4
fig4b-relu (≈)        1.77    14                          –
fig5a, fig5b          2.7-3.2 28-45                       2
fig6a                 3.83    124                         8
fig6b, fig6c (≈)      2.9-3.3 48-67                       –
mechanism (cosine)    0.30    91 (margin 0.05)            8
====================  ======  ==========================  ===================

So no affordable seed count makes every claim decisive: fig3, fig5 and fig6 would need 20-124
seeds. Within the 2-hour budget (``--workers 2`` on a 2-core CPU) the seeds went to 5 for every
claim rather than more for a few, and the variance was cut where it is cheap instead: the
10k-example test set (the MLP claims fig3, fig5, mechanism), a CNN whose seeds differ less, and
ρ* at the paper's 0.1 (at quick, ρ = 0.3 cost both activations accuracy). Claims whose decisive
count exceeds 5 may well stay "inconclusive at this scale"; ``--seeds N`` raises every point's
seeds for a user with more time. The residual CNN reaches 98.6 % (ReLU and GELU, one seed each,
30 epochs, measured before any penalty run) on 2,000 examples, so MNIST-1D leaves little room for
a regularizer to gain: a CNN claim that needs a gain of a full point may fail for that reason.

Measured cost per seed on the 2-core CPU, two jobs at once, compile included: residual CNN 40 s
(SGD), 85 s (penalty), 75 s (SAM); ``nmelab reproduce --scale small --plan`` sums the tasks. The
wall and CPU time of the published run are in ``docs/results/small/``.

``paper`` - the paper's setups: CIFAR-10 WRN-28-10 (Zagoruyko & Komodakis, cosine decay, 200
epochs) and ImageNet ResNet-50 (Goyal et al., batch 1024, cosine decay, 300 epochs), 5 seeds,
data from ``--data-dir`` (``DIR/cifar10``, ``DIR/imagenet``; checked before anything starts),
recipes ``configs/cifar10_wrn28_10.py`` and ``configs/imagenet_resnet50.py``. Fig. 5 has four
panels (CIFAR-10 / ImageNet × GELU / ReLU); ``sparsity`` trains WRN-28-10 per β and measures
65,536 sampled exact diagonal entries; ``estimators`` runs on WRN-28-10 at σ² ∈ {1e-3, 3e-3};
the mechanism trains nothing and reads Fig. 2's SGD checkpoints (a measurement that finds its
Fig. 2 run unfinished fails with a message; rerun the command)::

    nmelab reproduce --scale paper --data-dir /data --out repro_paper --shard $I/$N

Shard it over a cluster job array (``--shard i/n``, ``0 ≤ i < n``, the same ``--scale`` and
``--experiments`` for every shard), then run the same command once without ``--shard`` (or with
``--report-only``) to write the report.

Seeds: MLP tasks train their seeds vmapped in one run (the trainer's ``num_seeds``); CNN tasks run
one seed per task (see :mod:`nmelab.experiments.recipes` for the measurements behind that
choice). JAX's persistent compilation cache (``OUT/.jax_cache``) lets tasks that differ
only in seed, ρ or σ share compiled code across worker processes and reruns.

Every result is a ``result.json`` written atomically in ``OUT/runs/<run_id>/``; killing the
command (even with SIGKILL) and rerunning it loses and duplicates nothing. A damaged record or
artifact is found when read, moved to ``OUT/damaged/`` with a warning and recomputed. ``load_results(OUT)``
gives every run as a DataFrame (one row per seed); ``nmelab reproduce --export-csv FILE`` writes
it as CSV, which ``load_results(FILE)`` reads back.

Published results: ``nmelab reproduce ... --publish docs/results/<scale>`` copies the report, its
PNG figures, ``claims.json`` and ``results.csv`` into the repository (:func:`publish`; no run
folders). ``nmelab reproduce --compare docs/results/small OUT`` sets the verdicts of a new run
``OUT`` beside the published ones (:func:`compare_claims`). :func:`compute_claims` rebuilds every
claim from a ``results.csv``; a test does so for each published scale and checks the verdicts
against the published report.

Honesty rules: the claims, grids, seeds and verdict rules are fixed in the code before the
runs; the report states every claim's verdict, including "not reproduced", "inconclusive at this
scale" and "not computed" (:mod:`nmelab.experiments.verdicts`).
"""

# The experiments, in report order: one import each registers it (nmelab.experiments.base).
from nmelab.experiments import fig1_landscape  # noqa: F401, I001
from nmelab.experiments import fig2_penalty  # noqa: F401
from nmelab.experiments import fig3_beta  # noqa: F401
from nmelab.experiments import fig4_custom  # noqa: F401
from nmelab.experiments import fig5_noise  # noqa: F401
from nmelab.experiments import fig6_sam  # noqa: F401
from nmelab.experiments import b4_pusam  # noqa: F401
from nmelab.experiments import mechanism  # noqa: F401
from nmelab.experiments import sparsity  # noqa: F401
from nmelab.experiments import ablation_estimators  # noqa: F401

from nmelab.experiments.base import SCALES, Experiment, Point, Scale, get, get_scale, names
from nmelab.experiments.pipeline import reproduce
from nmelab.experiments.planning import plan
from nmelab.experiments.publish import ClaimChange, compare_claims, publish
from nmelab.experiments.report import compute_claims
from nmelab.experiments.results import load_results
from nmelab.experiments.sweep import RunSpec, parse_shard, run_sweep, shard_runs
from nmelab.experiments.verdicts import equivalence_verdict, verdict

__all__ = [
    "SCALES",
    "ClaimChange",
    "Experiment",
    "Point",
    "RunSpec",
    "Scale",
    "compare_claims",
    "compute_claims",
    "equivalence_verdict",
    "get",
    "get_scale",
    "load_results",
    "names",
    "parse_shard",
    "plan",
    "publish",
    "reproduce",
    "run_sweep",
    "shard_runs",
    "verdict",
]
