"""Curvature tracked during training: tr H, tr GN, tr NME, λmax(H), NME-diagonal sparsity, fidelity.

Every ``curvature.every_steps`` steps (and at steps 0 and the last one) the tracker measures, for
every seed, on a *fixed probe batch* (the first ``curvature.probe_batch_size`` training examples,
never augmented):

* ``tr H``, ``tr GN``, ``tr NME`` with their standard errors, by Hutchinson on shared probes
  (:func:`nmelab.estimators.hutchinson.trace_split`, paper eq. 2): ``tr H = tr GN + tr NME`` holds
  probe by probe, so it holds exactly for the estimates too;
* ``λmax(H)`` by Lanczos (:func:`nmelab.estimators.lanczos.eigenpairs`, ``curvature.lanczos_iters``
  steps) with its Ritz residual;
* the NME diagonal's sparsity statistics (:func:`nmelab.estimators.diagonal_statistics`: fraction of
  entries above 1e-3 max, excess kurtosis, top-1 % share, max and mean ``|d|``) of the Hutchinson
  diagonal with ``curvature.num_probes`` probes, or of the exact one with
  ``curvature.exact_diagonal`` (``P`` products: small models only). Paper §4.3, eq. 11-12. Trap:
  Hutchinson's noise makes a sparse diagonal look dense; trust the sparsity only when exact;
* optionally the second-order fidelity at ``curvature.fidelity_rhos``
  (:func:`nmelab.estimators.fidelity.second_order_fidelity`): cosine and residual of ``ρHu``,
  ``ρGNu`` and ``ρNMEu`` against the gradient change of a step ``ρ g/‖g‖``.

BatchNorm models are measured in *eval mode* (running statistics): the probe-batch loss is then a
sum of per-example losses and the split is the textbook one (see :mod:`nmelab.objective`). Train
mode would measure the curvature of the batch-coupled function instead, and its value would depend
on the probe batch's composition.

The keys are ``fold_in(PRNGKey(seed), step)``-derived, so a resumed run writes the same records.
One compiled function measures one seed and is called once per seed: neither ``lax.map`` (a while
loop, in which XLA's CPU backend runs convolutions 20-50 times slower) nor ``vmap`` (vmapped
convolutions become grouped ones, 2-3 times slower on CPU).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nmelab import curvature
from nmelab.train.state import TrainState

CURVATURE_FILE = "curvature.jsonl"
"""The file (in the run's workdir) holding one :meth:`CurvatureTracker.measure` record per line."""

FIDELITY_PREDICTORS = ("hessian", "gauss_newton", "nme")
"""The predictors of the gradient change whose fidelity is recorded."""

FIDELITY_METRICS = ("cosine", "residual")


def fidelity_key(predictor: str, metric: str) -> str:
    """The record key of a fidelity measurement, e.g. ``fidelity_hessian_cosine``."""
    return f"fidelity_{predictor}_{metric}"


def check_fidelity_record(record: Any) -> None:
    """Check one curvature record with fidelity (the schema :mod:`~nmelab.experiments` reads).

    Schema: ``step`` (int), ``fidelity_rhos`` (list of R numbers), ``diverged`` (list of S
    bools), and for every predictor and metric :func:`fidelity_key` → S lists of R numbers or
    ``null`` (NaN).

    Raises:
      ValueError: naming the key and what was wrong.
    """
    if not isinstance(record, dict):
        raise ValueError(f"record: expected an object, got {type(record).__name__}")
    if not isinstance(record.get("step"), int):
        raise ValueError(f"record.step: expected an integer, got {record.get('step')!r}")
    rhos = record.get("fidelity_rhos")
    if not isinstance(rhos, list) or not rhos:
        raise ValueError(f"record.fidelity_rhos: expected a non-empty list, got {rhos!r}")
    diverged = record.get("diverged")
    if not isinstance(diverged, list) or not diverged:
        raise ValueError(f"record.diverged: expected a list of bools, got {diverged!r}")
    for predictor in FIDELITY_PREDICTORS:
        for metric in FIDELITY_METRICS:
            key = fidelity_key(predictor, metric)
            values = record.get(key)
            if (
                not isinstance(values, list)
                or len(values) != len(diverged)
                or not all(isinstance(v, list) and len(v) == len(rhos) for v in values)
            ):
                raise ValueError(
                    f"record.{key}: expected {len(diverged)} lists of {len(rhos)} values"
                )


_TRACKING_SALT = 0x7E57  # separates the tracking keys from the training keys of the same seed

DIAGONAL_FIELDS = ("fraction_above", "kurtosis", "top_k_share", "max_abs", "mean_abs")
"""The fields of :class:`nmelab.estimators.DiagonalStatistics` written as ``nme_diag_<field>``."""


def validate_curvature_config(config: ml_collections.ConfigDict) -> None:
    """Check the ``curvature`` sub-config (only read when ``every_steps > 0``).

    Raises:
      ValueError: naming the key, the expected range and the value.
    """
    checks = {
        "num_probes": (config.num_probes, 2, "the stderr needs two samples"),
        "probe_batch_size": (config.probe_batch_size, 1, "examples"),
        "lanczos_iters": (config.lanczos_iters, 1, "Lanczos steps"),
    }
    for key, (value, minimum, meaning) in checks.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(
                f"config.curvature.{key}: expected an integer >= {minimum} ({meaning}), "
                f"got {value!r}"
            )
    rhos = config.fidelity_rhos or ()
    if not all(isinstance(r, int | float) and math.isfinite(r) and r > 0 for r in rhos):
        raise ValueError(
            f"config.curvature.fidelity_rhos: expected finite values > 0, got {tuple(rhos)}"
        )


class CurvatureTracker:
    """Measures the curvature of every seed on the run's fixed probe batch.

    Args:
      run: the :class:`~nmelab.train.Run`.
      config: the ``curvature`` sub-config.
    """

    def __init__(self, run: Any, config: ml_collections.ConfigDict):
        self.run = run
        self.config = config
        self.rhos = tuple(float(r) for r in (config.fidelity_rhos or ()))
        x, y = run.source.probe_batch(int(config.probe_batch_size))
        self.batch = (jax.device_put(x), jax.device_put(y))
        self.key = jax.random.fold_in(jax.random.PRNGKey(run.config.seed), _TRACKING_SALT)
        self._measure = jax.jit(self._measure_one)

    def _measure_one(self, params: Any, batch_stats: Any, key: jax.Array) -> dict[str, Any]:
        from nmelab.estimators import diagonal, eigenpairs, trace_split

        config = self.config
        objective = self.run.eval_objective(batch_stats)
        batch = self.batch
        trace_key, lanczos_key, diagonal_key = jax.random.split(key, 3)
        traces = trace_split(objective, params, batch, trace_key, int(config.num_probes))
        out: dict[str, Any] = {}
        for name, estimate in traces.as_dict().items():
            out[f"trace_{name}"] = estimate.value
            out[f"trace_{name}_stderr"] = estimate.stderr
        out["loss"] = objective.value(params, batch)
        pairs = eigenpairs(
            curvature.hessian(objective, params, batch),
            k=1,
            which="largest",
            key=lanczos_key,
            num_iters=int(config.lanczos_iters),
        )
        out["lambda_max"] = pairs.eigenvalues[-1]
        out["lambda_max_residual"] = pairs.residual_norms[-1]
        exact = bool(config.get("exact_diagonal", False))
        nme_diagonal = diagonal(
            curvature.nme(objective, params, batch),
            None if exact else diagonal_key,
            None if exact else int(config.num_probes),
            exact=exact,
        )
        out["nme_diagonal"] = nme_diagonal.value
        if self.rhos:
            from nmelab.estimators.fidelity import second_order_fidelity

            result = second_order_fidelity(objective, params, batch, jnp.asarray(self.rhos))
            for predictor in FIDELITY_PREDICTORS:
                fidelity = getattr(result, predictor)
                for metric in FIDELITY_METRICS:
                    out[fidelity_key(predictor, metric)] = getattr(fidelity, metric)
            out["fidelity_delta_norm"] = result.delta_norm
        return out

    def measure(self, state: TrainState, step: int) -> dict[str, Any]:
        """Measure every seed of ``state``; return a record of per-seed lists.

        Keys: ``trace_hessian``, ``trace_gauss_newton``, ``trace_nme`` (and ``*_stderr``),
        ``loss`` (probe batch, eval mode), ``lambda_max``, ``lambda_max_residual``,
        ``nme_diag_*`` (:data:`DIAGONAL_FIELDS` of :func:`nmelab.estimators.diagonal_statistics`),
        ``diverged``; with fidelity ρ's, ``fidelity_rhos``
        and ``fidelity_{hessian,gauss_newton,nme}_{cosine,residual}`` (per seed, one value per ρ;
        :func:`fidelity_key`, checked by :func:`check_fidelity_record`) and
        ``fidelity_delta_norm``.
        """
        from nmelab.estimators import diagonal_statistics

        keys = jax.random.split(jax.random.fold_in(self.key, step), state.num_seeds)
        per_seed = []
        for i in range(state.num_seeds):  # one compiled call per seed (see the module docstring)
            params, stats = jax.tree.map(
                lambda leaf, i=i: leaf[i], (state.params, state.batch_stats)
            )
            per_seed.append(jax.device_get(self._measure(params, stats, keys[i])))
        statistics = [diagonal_statistics(values.pop("nme_diagonal")) for values in per_seed]
        record: dict[str, Any] = {
            k: [np.asarray(values[k]).tolist() for values in per_seed] for k in per_seed[0]
        }
        for field in DIAGONAL_FIELDS:
            record[f"nme_diag_{field}"] = [getattr(stat, field) for stat in statistics]
        record["diverged"] = (np.asarray(state.diverged_at) >= 0).tolist()
        record["num_probes"] = int(self.config.num_probes)
        record["probe_batch_size"] = int(self.batch[1].shape[0])
        if self.rhos:
            record["fidelity_rhos"] = list(self.rhos)
        return record
