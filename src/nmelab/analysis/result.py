"""The record :func:`nmelab.analysis.analyze` returns: estimates, a JSON-able summary and a table.

:class:`Analysis` keeps the estimators' own records (:class:`~nmelab.estimators.SplitEstimate`,
:class:`~nmelab.estimators.Eigenpairs`, :class:`~nmelab.estimators.SpectralDensity`, ...), so
nothing is lost (the Ritz vectors and the NME diagonal stay available); :meth:`Analysis.to_dict`
reduces them to plain numbers for JSON (:func:`nmelab._io.to_jsonable`: NaN/inf become ``None``)
and :meth:`Analysis.table` prints them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from nmelab._io import to_jsonable
from nmelab.estimators import (
    BlockNorms,
    DiagonalStatistics,
    Eigenpairs,
    Estimate,
    SpectralDensity,
    SplitEstimate,
)

__all__ = ["MATRICES", "Analysis"]

MATRICES: tuple[str, ...] = ("hessian", "gauss_newton", "nme")
"""The three matrices of the split ``H = GN + NME`` (paper eq. 2), in table order."""

_SYMBOLS = {"hessian": "H", "gauss_newton": "GN", "nme": "NME"}


@dataclasses.dataclass(frozen=True)
class Analysis:
    """The H / GN / NME split of one model at one point, on one batch.

    Attributes:
      num_params: ``P``.
      num_examples: ``N``, the examples of the batch.
      loss: ``L(θ)`` on the batch.
      num_probes: Hutchinson probes of the traces (and of the NME diagonal when not exact).
      num_iters: Lanczos steps of the eigenpairs and of each SLQ probe.
      traces: ``tr H``, ``tr GN``, ``tr NME`` on shared probes (eq. 2, 19).
      split_residual: ``max_i |vᵢᵀHvᵢ − vᵢᵀGNvᵢ − vᵢᵀNMEvᵢ|`` over the probes: the split holds
        probe by probe, so this is rounding only (a large value means a broken operator).
      exact_traces: ``{matrix: Σ diag}`` from the exact diagonals, or ``None`` when not exact.
      gn_trace_sampled: the sampled-label GN trace (eq. 20, per-example form, ``num_probes``
        draws); ``None`` unless the loss is cross-entropy.
      eigenpairs: ``{matrix: Eigenpairs}``, the smallest and the largest Ritz pair of each.
      nme_diagonal: the NME diagonal (exact, or Hutchinson with ``num_probes`` probes).
      nme_diagonal_exact: whether ``nme_diagonal`` is exact.
      nme_diagonal_statistics: sparsity and spikiness of the whole NME diagonal (section 4.3).
      nme_layer_statistics: the same per layer (``{group name: statistics}``).
      nme_block_norms: Frobenius norms of the NME's blocks between layers (App. A.2: zero within
        a ReLU layer).
      spectral_densities: ``{matrix: SpectralDensity}`` by stochastic Lanczos quadrature.
    """

    num_params: int
    num_examples: int
    loss: float
    num_probes: int
    num_iters: int
    traces: SplitEstimate
    split_residual: float
    exact_traces: dict[str, float] | None
    gn_trace_sampled: Estimate | None
    eigenpairs: dict[str, Eigenpairs]
    nme_diagonal: Estimate
    nme_diagonal_exact: bool
    nme_diagonal_statistics: DiagonalStatistics
    nme_layer_statistics: dict[str, DiagonalStatistics]
    nme_block_norms: BlockNorms
    spectral_densities: dict[str, SpectralDensity]

    def extremes(self) -> dict[str, tuple[float, float]]:
        """``{matrix: (λ_min, λ_max)}``: the outermost Ritz values of each matrix."""
        return {
            name: (float(e.eigenvalues[0]), float(e.eigenvalues[-1]))
            for name, e in self.eigenpairs.items()
        }

    def to_dict(self) -> dict[str, Any]:
        """Every number of the analysis as plain, strict-JSON-able Python (NaN/inf → ``None``).

        Holds the table's values (traces ± stderr, exact traces, eq. 20, λ_min/λ_max with their
        residuals, NME-diagonal statistics overall and per layer, NME block norms) and the SLQ
        nodes and weights (enough to redraw the spectra); not the Ritz vectors or the diagonal.
        """
        traces = self.traces.as_dict()
        return to_jsonable(
            {
                "num_params": self.num_params,
                "num_examples": self.num_examples,
                "loss": self.loss,
                "num_probes": self.num_probes,
                "num_iters": self.num_iters,
                "traces": {
                    name: {
                        "estimate": traces[name].value,
                        "stderr": traces[name].stderr,
                        "exact": None if self.exact_traces is None else self.exact_traces[name],
                    }
                    for name in MATRICES
                },
                "split_residual": self.split_residual,
                "gn_trace_sampled": None
                if self.gn_trace_sampled is None
                else {
                    "estimate": self.gn_trace_sampled.value,
                    "stderr": self.gn_trace_sampled.stderr,
                },
                "eigenvalues": {
                    name: {
                        "min": e.eigenvalues[0],
                        "max": e.eigenvalues[-1],
                        "residual_min": e.residual_norms[0],
                        "residual_max": e.residual_norms[-1],
                    }
                    for name, e in self.eigenpairs.items()
                },
                "nme_diagonal": {
                    "exact": self.nme_diagonal_exact,
                    "statistics": dataclasses.asdict(self.nme_diagonal_statistics),
                    "by_layer": {
                        name: dataclasses.asdict(stats)
                        for name, stats in self.nme_layer_statistics.items()
                    },
                },
                "nme_block_norms": {
                    "names": list(self.nme_block_norms.names),
                    "norms": self.nme_block_norms.norms,
                    "stderr": self.nme_block_norms.stderr,
                    "exact": self.nme_block_norms.exact,
                },
                "spectral_densities": {
                    name: {"nodes": sld.nodes, "weights": sld.weights}
                    for name, sld in self.spectral_densities.items()
                },
            }
        )

    def table(self) -> str:
        """A plain-text table of the analysis (fixed-width columns, for a terminal or a log)."""
        traces = self.traces.as_dict()
        extremes = self.extremes()
        rows = [
            [
                _SYMBOLS[name],
                f"{float(traces[name].value):.4g} ± {float(traces[name].stderr):.2g}",
                "" if self.exact_traces is None else f"{self.exact_traces[name]:.4g}",
                f"{extremes[name][0]:.4g}",
                f"{extremes[name][1]:.4g}",
            ]
            for name in MATRICES
        ]
        if self.gn_trace_sampled is not None:
            est = self.gn_trace_sampled
            rows.append(["GN, eq. 20", f"{float(est.value):.4g} ± {float(est.stderr):.2g}"])
        header = ["matrix", f"trace ({self.num_probes} shared probes)", "exact trace"]
        lines = [
            f"H = GN + NME (paper eq. 2) on N = {self.num_examples} examples, "
            f"P = {self.num_params} parameters, loss {self.loss:.4g}",
            *_columns([[*header, "λ_min", "λ_max"], *rows]),
            f"shared probes: max |vᵀHv − vᵀGNv − vᵀNMEv| = {self.split_residual:.1e}; Lanczos: "
            f"{self.num_iters} steps, largest residual ‖Av − λv‖ = {self._largest_residual():.1e}",
            "",
            f"NME diagonal ({'exact' if self.nme_diagonal_exact else 'Hutchinson, noisy'}), "
            "section 4.3",
        ]
        stats_rows = [["layer", "frac > 1e-3·max", "excess kurtosis", "top-1% share", "max |d|"]]
        layers = {"all parameters": self.nme_diagonal_statistics, **self.nme_layer_statistics}
        for name, stats in layers.items():
            stats_rows.append(
                [
                    name,
                    f"{stats.fraction_above:.3f}",
                    f"{stats.kurtosis:.3g}",
                    f"{stats.top_k_share:.3f}",
                    f"{stats.max_abs:.3g}",
                ]
            )
        lines += _columns(stats_rows)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def _largest_residual(self) -> float:
        return max(float(np.max(np.asarray(e.residual_norms))) for e in self.eigenpairs.values())


def _columns(rows: list[list[str]]) -> list[str]:
    """Rows of cells as lines: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines
