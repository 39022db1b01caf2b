"""The regularizer interface, the name registry and hyperparameter validation.

Every regularizer is a frozen dataclass registered as a JAX pytree:

* float hyperparameters (``rho``, ``sigma``) are pytree *data* leaves, so a jitted train step that
  takes the regularizer as an argument compiles once and serves every value of ρ or σ (and can be
  ``vmap``-ed over a stacked grid of them);
* structural hyperparameters (``p``, ``num_probes``, ``form``, ``straight_through``, ``probe``,
  ``weight_decay_mask``) are static *meta* fields: changing them changes the computation and
  recompiles.

:meth:`Regularizer.record` spells out every hyperparameter, defaults included, for a run's record.

Construct them with :func:`get`, which validates every hyperparameter by name. Direct construction
validates too, but only values that are concrete: inside ``jit``/``vmap`` the leaves are tracers,
and pytree unflattening may pass placeholders, so those are let through unchecked.

Trap: :func:`get` turns integer ρ/σ into floats; a directly constructed ``SAM(rho=1)`` keeps an
integer leaf, whose abstract type differs from a float's and compiles a second time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import numpy as np

from nmelab.curvature.operator import check_inputs
from nmelab.objective import Objective
from nmelab.types import Batch, Key, Params, PyTree

__all__ = [
    "Regularizer",
    "check_choice",
    "check_nonnegative",
    "check_positive_int",
    "get",
    "hyperparameters",
    "names",
    "register",
    "static_field",
]

_REGISTRY: dict[str, type[Regularizer]] = {}


def static_field(default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field stored as pytree metadata (static under ``jit``)."""
    return dataclasses.field(default=default, metadata={"static": True})


class Regularizer:
    """Base class: ``value_and_grad`` packs the result of :meth:`_compute` per ``has_aux``.

    Subclasses are frozen dataclasses decorated with :func:`register`; they implement
    ``_compute(objective, params, batch, key) -> (value, aux, grads)`` where ``aux`` is the
    auxiliary output of the *clean* pass at θ (``None`` without ``has_aux``).

    Attributes:
      name: the registry name (class attribute).
      stochastic: whether ``value_and_grad`` needs a random ``key`` (class attribute).
    """

    name: ClassVar[str] = ""
    stochastic: ClassVar[bool] = False

    def value_and_grad(
        self, objective: Objective, params: Params, batch: Batch, key: Key | None = None
    ) -> tuple[Any, PyTree]:
        """Return the regularized value and the update direction.

        Args:
          objective: the model and loss (static under ``jit``).
          params: the point θ.
          batch: ``(x, y)``.
          key: a ``jax.random`` key; required by the stochastic regularizers (``weight_noise``,
            ``hessian_trace``, ``gn_trace``, ``nme_trace``), ignored by the others.

        Returns:
          ``(value, grads)`` for an objective without aux, ``((value, aux), grads)`` with
          ``objective.has_aux`` (the :func:`jax.value_and_grad` ``has_aux`` convention). ``grads``
          has the structure of ``params`` and is the direction to hand to an optax optimizer;
          ``aux`` comes from the clean pass at θ.

        Raises:
          TypeError: if ``objective`` is not an :class:`~nmelab.Objective` or params are not
            floating-point.
          ValueError: for a malformed batch, NaN params, a missing ``key`` for a stochastic
            regularizer, or a loss the regularizer does not support.
        """
        check_inputs(objective, params, batch)
        if self.stochastic and key is None:
            raise ValueError(
                f"regularizer {self.name!r} is stochastic and needs a jax.random key; got key=None"
            )
        value, aux, grads = self._compute(objective, params, tuple(batch), key)
        return ((value, aux), grads) if objective.has_aux else (value, grads)

    def _compute(
        self, objective: Objective, params: Params, batch: Batch, key: Key | None
    ) -> tuple[jax.Array, Any, PyTree]:
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        """``{"name": ..., <every hyperparameter>: value}``, defaults included, as plain Python.

        What a run's record should store: the static choices a config may leave at their defaults
        (``probe``, ``form``, ``weight_decay_mask``...) are spelled out, so a record always says
        which estimator was used. Float leaves become Python floats (arrays: nested lists).

        Raises:
          TypeError: called on a regularizer whose leaves are tracers (inside ``jit``).
        """
        out: dict[str, Any] = {"name": self.name}
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if isinstance(value, jax.core.Tracer):
                raise TypeError(
                    f"{self.name}.record(): {field.name} is traced; call it outside jit"
                )
            if not field.metadata.get("static", False):
                value = np.asarray(value).tolist()
            out[field.name] = value
        return out

    @classmethod
    def hyperparameters(cls) -> tuple[str, ...]:
        """The names of the hyperparameters, in constructor order."""
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def required_hyperparameters(cls) -> tuple[str, ...]:
        """The hyperparameters without a default."""
        return tuple(
            f.name
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )


def register(name: str, *, stochastic: bool = False) -> Callable[[type], type]:
    """Class decorator: make a frozen dataclass a pytree and add it to the registry as ``name``.

    Fields declared with :func:`static_field` become pytree metadata; all others are leaves.
    """

    def decorate(cls: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"regularizer name {name!r} is already registered")
        cls.name = name
        cls.stochastic = stochastic
        _register_pytree(cls)
        _REGISTRY[name] = cls
        return cls

    return decorate


def _register_pytree(cls: type) -> None:
    """Register ``cls`` as a pytree node whose treedef carries the class.

    Trap: ``jax.tree_util.register_dataclass`` (jax 0.10.2) builds treedefs that compare *equal*
    across different classes with equal metadata (``HessianTrace`` and ``NMETrace`` with the same
    ``num_probes``/``probe``). A jitted step taking the regularizer as an argument then
    occasionally reused the other class's executable - silently computing the wrong regularizer.
    A plain custom node compares by type.
    """
    fields = dataclasses.fields(cls)
    data = tuple(f.name for f in fields if not f.metadata.get("static", False))
    meta = tuple(f.name for f in fields if f.metadata.get("static", False))

    def flatten_with_keys(obj: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        children = tuple((jax.tree_util.GetAttrKey(n), getattr(obj, n)) for n in data)
        return children, tuple(getattr(obj, m) for m in meta)

    def flatten(obj: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        return tuple(getattr(obj, n) for n in data), tuple(getattr(obj, m) for m in meta)

    def unflatten(aux: tuple[Any, ...], children: Any) -> Any:
        return cls(**dict(zip(data, children, strict=True)), **dict(zip(meta, aux, strict=True)))

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)


def names() -> tuple[str, ...]:
    """The registered regularizer names, in registration order."""
    return tuple(_REGISTRY)


def hyperparameters(name: str) -> tuple[str, ...]:
    """The hyperparameters the regularizer ``name`` accepts (ValueError for an unknown name)."""
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown regularizer name {name!r}; valid choices: {', '.join(_REGISTRY)}"
        )
    return _REGISTRY[name].hyperparameters()


def get(name: str, **hparams: Any) -> Regularizer:
    """Return the regularizer ``name`` with validated hyperparameters.

    Args:
      name: one of :data:`nmelab.regularizers.NAMES`.
      **hparams: the regularizer's hyperparameters, by name (``rho``, ``p``, ``sigma``,
        ``num_probes``, ``probe``, ``form``, ``straight_through``, ``weight_decay``,
        ``weight_decay_mask``); integer float-valued ones (``rho``, ``sigma``, ``weight_decay``) are
        turned into floats so that every value shares one compiled step.

    Returns:
      A frozen pytree dataclass with a ``value_and_grad`` method.

    Raises:
      ValueError: for an unknown name (listing the valid ones), an unknown or missing
        hyperparameter (listing the accepted ones), or an invalid value (naming it).
      TypeError: for a non-string ``name`` or a hyperparameter of the wrong type.

    Example:
      >>> reg = get("gradient_penalty", rho=0.1, p=1)
      >>> (value, grads) = reg.value_and_grad(objective, params, batch)  # doctest: +SKIP
    """
    valid = ", ".join(_REGISTRY)
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, one of {valid}; got {name!r}")
    if name not in _REGISTRY:
        raise ValueError(f"unknown regularizer name {name!r}; valid choices: {valid}")
    cls = _REGISTRY[name]
    accepted = cls.hyperparameters()
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        accepts = f"accepts only {', '.join(accepted)}" if accepted else "takes no hyperparameters"
        raise ValueError(
            f"regularizer {name!r} {accepts}; got unknown hyperparameter(s) "
            + ", ".join(f"{k}={hparams[k]!r}" for k in unknown)
        )
    missing = [k for k in cls.required_hyperparameters() if k not in hparams]
    if missing:
        raise ValueError(
            f"regularizer {name!r} requires hyperparameter(s) {', '.join(missing)}; got none"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    converted = {}
    for key, value in hparams.items():
        if not fields[key].metadata.get("static", False):
            _require_real(value, key, name)
            if isinstance(value, int):
                value = float(value)
        converted[key] = value
    return cls(**converted)


# --------------------------------------------------------------------------------------------
# validation helpers (called from the subclasses' __post_init__)
# --------------------------------------------------------------------------------------------


def _require_real(value: Any, arg: str, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.ndarray | np.number):
        if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer):
            return
        raise TypeError(f"{name}: {arg} must be a real number, got {value!r}")


def _concrete_values(value: Any) -> np.ndarray | None:
    """The values of a concrete numeric leaf; ``None`` for tracers and placeholders."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | np.number | np.ndarray):
        return np.asarray(value)
    if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer):
        return np.asarray(value)
    return None


def check_nonnegative(value: Any, arg: str, name: str, meaning: str) -> None:
    """Require a concrete leaf to be finite and ``>= 0`` (arrays: every entry); skip tracers.

    Raises:
      ValueError: naming ``arg``, the expected range and the value given.
    """
    values = _concrete_values(value)
    if values is None:
        return
    if not np.issubdtype(values.dtype, np.number) or np.iscomplexobj(values):
        raise TypeError(f"{name}: {arg} ({meaning}) must be real, got {value!r}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name}: {arg} ({meaning}) must be finite, got {value!r}")
    if np.any(values < 0):
        raise ValueError(f"{name}: {arg} ({meaning}) must be >= 0, got {value!r}")


def check_choice(value: Any, arg: str, name: str, choices: tuple[Any, ...]) -> None:
    """Require ``value`` to be one of ``choices``, with the choice's exact type (``True != 1``).

    Raises:
      ValueError: naming ``arg``, the valid choices and the value given.
    """
    ok = any(type(value) is type(c) and value == c for c in choices)
    if not ok:
        raise ValueError(
            f"{name}: {arg} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}"
        )


def check_positive_int(value: Any, arg: str, name: str) -> None:
    """Require a Python/numpy integer ``>= 1`` (not a bool).

    Raises:
      ValueError: naming ``arg`` and the value given.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name}: {arg} must be an integer >= 1, got {value!r}")
