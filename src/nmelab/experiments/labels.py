"""Legend labels shared by the figures and the report."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ACTIVATION_LABELS", "METHOD_LABELS", "activation_label"]

ACTIVATION_LABELS = {
    "relu": "ReLU",
    "gelu": "GELU",
    "beta_gelu": "β-GELU",
    "augmented_relu": "augmented ReLU",
    "diminished_gelu": "diminished GELU",
}

METHOD_LABELS = {
    "sgd": "SGD",
    "gradient_penalty": "penalty (p=1)",
    "sam": "SAM",
    "weight_noise": "weight noise",
    "hessian_trace": "Hessian-trace penalty",
    "gn_trace": "GN-trace penalty",
    "nme_trace": "NME-trace penalty",
}


def activation_label(name: str, params: Mapping[str, float] | None = None) -> str:
    """``"augmented ReLU (β=1)"``-style label."""
    label = ACTIVATION_LABELS.get(name, name)
    if params and "beta" in params:
        label += f" (β={float(params['beta']):g})"
    return label
