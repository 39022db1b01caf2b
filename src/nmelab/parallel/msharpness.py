"""m-sharpness: regularizers evaluated per shard of the batch and averaged (``shard_map``).

Global versus per-shard
-----------------------
Split the global batch of ``B`` examples into ``M`` equal shards (one per device of the ``"data"``
mesh axis, ``m = B/M`` examples each) with batch-mean losses ``L_s``, so that
``L = (1/M) Σ_s L_s``. Write ``g = ∇L(θ)``, ``g_s = ∇L_s(θ)``, ``H_s = ∇²L_s(θ)``.

*Global* (the default: :func:`nmelab.parallel.shard_batch` and plain ``jit``) computes exactly the
single-device quantities on the full batch:

* SAM: ``ε = ρ g/‖g‖`` from the full-batch gradient and the direction ``∇L(θ + ε)``;
* the gradient penalty ``L + ρ‖g‖``: direction ``g + ρ H g/‖g‖``;
* weight noise, the trace penalties: one draw of the noise / probes / labels for the whole batch.

*Per shard* (:func:`per_shard`, "m-sharpness" with ``m`` the per-device batch, the default of
google-research/sam under ``pmap``) runs the regularizer on every shard separately and averages
the values and directions over the shards:

* SAM: ``(1/M) Σ_s ∇L_s(θ + ρ g_s/‖g_s‖)`` - every shard ascends along its *own* normalised
  gradient. Foret et al. (2021, sec. 4.1) found smaller ``m`` generalises better; to first order it
  is ``g + (ρ/M) Σ_s H_s g_s/‖g_s‖``, the gradient of the per-shard penalty ``(1/M) Σ_s ‖g_s‖``,
  which is ``≥ ‖g‖`` (triangle inequality): per-shard sharpness is larger and noisier.
* USAM: ``(1/M) Σ_s ∇L_s(θ + ρ g_s)``.
* gradient penalty: value ``(1/M) Σ_s (L_s + ρ‖g_s‖ᵖ)``, direction ``(1/M) Σ_s (g_s + ρ H_s g_s/‖g_s‖)``
  (``p = 1``) or ``(1/M) Σ_s (g_s + 2ρ H_s g_s)`` (``p = 2``).
* ``none``: ``(1/M) Σ_s g_s = g`` - identical to global (a check).
* weight noise, ``hessian_trace``, ``nme_trace``, ``gn_trace``: with ``independent_keys=True``
  (default) shard ``s`` draws its noise / probes / labels from ``fold_in(key, s)``, so the result
  averages ``M`` independent draws, each on ``m`` examples - same expectation as global (the
  penalties are linear in the batch mean), lower variance in the noise, different numbers. With
  ``independent_keys=False`` every shard uses ``key`` itself; then weight noise and the
  Hutchinson penalties (``hessian_trace``, ``nme_trace``) equal the global ones: the same ``ε`` or
  probes ``v`` on every shard (they have the params' shapes) and an average of quantities linear
  in the batch mean. ``gn_trace`` stays different: its per-shard estimate ``m‖∇L_s(θ, ŷ)‖²`` drops
  the cross-shard terms of the global ``B‖∇L(θ, ŷ)‖²``, and its labels are drawn on the shard's
  logits, so even a shared key gives other draws than the global ones.

Models with BatchNorm normalise each shard with *its own* statistics inside the ``shard_map``
(as under ``pmap``), which is part of what m-sharpness means in google-research/sam; aux outputs
(updated statistics) are averaged over shards by default.

The factor-of-``M`` trap
------------------------
Inside ``shard_map`` with ``check_vma=True`` (the default) the params enter *invariant*
(replicated), and the transpose of their implicit broadcast to the varying per-shard computation
is a ``psum``: ``jax.grad`` w.r.t. replicated params already returns the **sum over shards** of
the per-shard gradients. The classic ``pmean`` afterwards then gives ``M`` times the mean (the
prototype's HVPs were off by exactly the device count). nmelab casts the params to *varying*
first (``jax.lax.pcast(params, axis, to="varying")``), so each shard's gradient is its own, and
then averages with ``pmean``. :func:`per_shard_map` exposes the per-shard values for tests.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from nmelab import validation
from nmelab.curvature.operator import check_inputs
from nmelab.objective import Objective
from nmelab.parallel.mesh import DATA_AXIS, check_mesh
from nmelab.types import Batch, Key, Params, PyTree

AUX_REDUCTIONS: tuple[str, ...] = ("mean", "concat", "stack")
"""How a per-shard aux leaf is combined: average over shards, concatenate the shards' leading
(per-example) axes, or stack the shards on a new leading axis."""


def _cast_varying(tree: Any, axis: str) -> Any:
    """``pcast`` every floating leaf of ``tree`` to varying over ``axis`` (inside ``shard_map``)."""

    def cast(leaf: Any) -> Any:
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            return jax.lax.pcast(leaf, axis, to="varying")
        return leaf

    return jax.tree.map(cast, tree)


def _check_divisible(batch: Any, num: int, axis: str, name: str = "batch") -> int:
    size = validation.batch_size(batch, name)
    if size % num:
        raise ValueError(
            f"{name} size must be divisible by the {num} devices along mesh axis {axis!r} "
            f"(one equal shard each), got {size} examples"
        )
    return size


def per_shard_map(fn: Callable[..., Any], mesh: Mesh, axis: str = DATA_AXIS) -> Callable[..., Any]:
    """``fn(params, batch, *args)`` evaluated on each shard of ``batch``, stacked over shards.

    The returned function takes the *global* batch (any placement), splits it into the ``M``
    shards of ``axis`` with ``shard_map``, evaluates ``fn`` on every shard with replicated
    ``params`` and ``args``, and returns ``fn``'s outputs with a new leading axis of length ``M``:
    ``out[s] == fn(params, shard_s, *args)``. ``params`` and every floating leaf of ``args`` are cast
    to varying first, so derivatives inside ``fn`` are per shard (see the module note on the
    factor-of-``M`` trap). Output leaves must be arrays.

    Args:
      fn: ``fn(params, batch, *args) -> pytree of arrays``.
      mesh: the mesh.
      axis: the mesh axis to split the batch over.

    Returns:
      ``mapped(params, batch, *args) -> pytree`` of ``(M, ...)`` arrays.

    Raises:
      ValueError: (when called) a batch size not divisible by ``M``.
    """
    check_mesh(mesh, axis)
    num = int(mesh.shape[axis])

    def mapped(params: Params, batch: Any, *args: Any) -> Any:
        _check_divisible(batch[0] if isinstance(batch, tuple | list) else batch, num, axis)

        def local(params: Params, batch: Any, *args: Any) -> Any:
            params, args = _cast_varying((params, args), axis)
            out = fn(params, batch, *args)
            return jax.tree.map(lambda leaf: jnp.expand_dims(leaf, 0), out)

        in_specs = (P(), P(axis)) + (P(),) * len(args)
        return jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=P(axis))(
            params, batch, *args
        )

    return mapped


def _freeze(spec: Any) -> Any:
    """Nested lists become tuples (the spec is static metadata and must be hashable)."""
    if isinstance(spec, list | tuple):
        return tuple(_freeze(s) for s in spec)
    if not isinstance(spec, str):
        raise ValueError(
            f"aux_reduction must be a string or nested tuples/lists of strings, got {spec!r}"
        )
    return spec


def _check_aux_reduction(spec: Any) -> None:
    leaves = jax.tree.leaves(spec)
    bad = [leaf for leaf in leaves if leaf not in AUX_REDUCTIONS]
    if not leaves or bad:
        raise ValueError(
            f"aux_reduction must be one of {AUX_REDUCTIONS} or a pytree prefix of the aux output "
            f"with those strings as leaves, got {spec!r}"
        )


@dataclasses.dataclass(frozen=True)
class PerShard:
    """A regularizer evaluated per shard and averaged (m-sharpness); build with :func:`per_shard`.

    Same interface as the wrapped regularizer: ``value_and_grad(objective, params, batch, key)``
    returns ``(value, grads)`` or ``((value, aux), grads)``, where ``value`` and ``grads`` are the
    means over shards of the per-shard ones. A pytree (the wrapped regularizer is its child, so its
    float hyperparameters stay traced leaves of a jitted step); the mesh and options are static.

    Attributes:
      regularizer: the wrapped regularizer (anything with ``value_and_grad``).
      mesh: the mesh.
      axis: the mesh axis whose devices each take one shard.
      aux_reduction: ``"mean"``, ``"concat"``, ``"stack"`` or a pytree prefix of the aux output with
        those leaves (e.g. ``("concat", "mean")`` for ``(logits, batch_stats)``).
      independent_keys: shard ``s`` uses ``fold_in(key, s)`` (default) instead of ``key``.
    """

    regularizer: Any
    mesh: Mesh = dataclasses.field(metadata={"static": True})
    axis: str = dataclasses.field(default=DATA_AXIS, metadata={"static": True})
    aux_reduction: Any = dataclasses.field(default="mean", metadata={"static": True})
    independent_keys: bool = dataclasses.field(default=True, metadata={"static": True})

    @property
    def name(self) -> str:
        """The wrapped regularizer's name."""
        return getattr(self.regularizer, "name", type(self.regularizer).__name__)

    @property
    def stochastic(self) -> bool:
        """Whether the wrapped regularizer needs a key."""
        return bool(getattr(self.regularizer, "stochastic", False))

    @property
    def num_shards(self) -> int:
        """``M``, the number of devices along :attr:`axis`."""
        return int(self.mesh.shape[self.axis])

    def value_and_grad(
        self, objective: Objective, params: Params, batch: Batch, key: Key | None = None
    ) -> tuple[Any, PyTree]:
        """The shard-averaged ``value_and_grad`` of the wrapped regularizer.

        Returns:
          ``(value, grads)``, or ``((value, aux), grads)`` with ``objective.has_aux``; ``value``
          and ``grads`` are averaged over the ``M`` shards, ``aux`` combined per
          :attr:`aux_reduction`. ``grads`` are replicated over the mesh.

        Raises:
          TypeError, ValueError: malformed inputs (as the wrapped regularizer), a missing key for
            a stochastic regularizer, or a batch size not divisible by ``M``.
        """
        check_inputs(objective, params, batch)
        if self.stochastic and key is None:
            raise ValueError(
                f"regularizer {self.name!r} is stochastic and needs a jax.random key; got key=None"
            )
        x, y = tuple(batch)
        _check_divisible(x, self.num_shards, self.axis, "batch x")
        axis = self.axis

        def local(reg: Any, params: Params, batch: Batch, key: Key | None) -> tuple[Any, ...]:
            params = _cast_varying(params, axis)
            if key is not None and self.independent_keys:
                key = jax.random.fold_in(key, jax.lax.axis_index(axis))
            out = reg.value_and_grad(objective, params, batch, key)
            (value, aux), grads = out if objective.has_aux else ((out[0], None), out[1])
            value = jax.lax.pmean(value, axis)
            grads = jax.lax.pmean(grads, axis)
            if objective.has_aux:
                aux = jax.tree.map(
                    functools.partial(_reduce_aux, axis=axis), self.aux_reduction, aux
                )
            return value, aux, grads

        aux_specs = jax.tree.map(
            lambda r: P(axis) if r in ("concat", "stack") else P(), self.aux_reduction
        )
        value, aux, grads = jax.shard_map(
            local,
            mesh=self.mesh,
            in_specs=(P(), P(), P(axis), P()),
            out_specs=(P(), aux_specs if objective.has_aux else P(), P()),
        )(self.regularizer, params, (x, y), key)
        return ((value, aux), grads) if objective.has_aux else (value, grads)


def _reduce_aux(reduction: str, tree: Any, axis: str) -> Any:
    if reduction == "mean":
        return jax.lax.pmean(tree, axis)
    if reduction == "stack":
        return jax.tree.map(lambda leaf: jnp.expand_dims(leaf, 0), tree)
    return tree


def _flatten(wrapper: PerShard) -> tuple[tuple[Any], tuple[Any, ...]]:
    static = (wrapper.mesh, wrapper.axis, wrapper.aux_reduction, wrapper.independent_keys)
    return (wrapper.regularizer,), (type(wrapper.regularizer), *static)


def _unflatten(static: tuple[Any, ...], children: tuple[Any]) -> PerShard:
    return PerShard(children[0], *static[1:])


# Registered by hand, not with ``register_dataclass``: the wrapped regularizer's *class* goes into
# the static data. In JAX 0.10.2 the ``register_dataclass`` treedefs of two classes with the same
# fields compare *equal* (their hashes differ), and the C++ jit cache, which compares only a few
# hash bits before calling ``==``, then sometimes dispatches the executable compiled for the other
# class. nmelab's regularizers carry their class themselves (``regularizers/base.py``); this keeps
# any wrapped object that does not distinguishable.
jax.tree_util.register_pytree_node(PerShard, _flatten, _unflatten)


def per_shard(
    regularizer: Any,
    mesh: Mesh,
    *,
    axis: str = DATA_AXIS,
    aux_reduction: Any = "mean",
    independent_keys: bool = True,
) -> PerShard:
    """Wrap a regularizer so that it runs per shard of the batch (m-sharpness, ``m = B/M``).

    See the module docstring for how each regularizer's maths changes. The result is called like
    the regularizer, with the *global* batch (any placement: ``jit`` moves it), and is a pytree,
    so it can be passed to a jitted train step in place of the regularizer.

    Args:
      regularizer: from :func:`nmelab.regularizers.get` (or anything with ``value_and_grad``).
      mesh: the mesh; the batch is split over ``axis``.
      axis: the mesh axis (default ``"data"``).
      aux_reduction: how the aux outputs of ``has_aux`` objectives are combined: ``"mean"``
        (default; BatchNorm statistics), ``"concat"`` (per-example outputs such as logits),
        ``"stack"``, or a pytree prefix of the aux with those leaves.
      independent_keys: draw noise / probes / labels independently per shard.

    Returns:
      A :class:`PerShard`.

    Raises:
      TypeError: a regularizer without ``value_and_grad`` or a non-Mesh ``mesh``.
      ValueError: an unknown axis or aux reduction.

    Example:
      >>> reg = per_shard(nmelab.regularizers.get("sam", rho=0.05), make_mesh())  # doctest: +SKIP
      >>> value, grads = jax.jit(reg.value_and_grad, static_argnums=0)(obj, params, batch)  # doctest: +SKIP
    """
    if not callable(getattr(regularizer, "value_and_grad", None)):
        raise TypeError(
            "regularizer must have a value_and_grad method (see nmelab.regularizers.get), got "
            f"{type(regularizer).__name__}"
        )
    if isinstance(regularizer, PerShard):
        raise TypeError("regularizer is already per-shard; wrap the plain regularizer once")
    check_mesh(mesh, axis)
    aux_reduction = _freeze(aux_reduction)
    _check_aux_reduction(aux_reduction)
    if not isinstance(independent_keys, bool):
        raise TypeError(f"independent_keys must be a bool, got {independent_keys!r}")
    return PerShard(regularizer, mesh, axis, aux_reduction, independent_keys)
