"""Placing batches and parameters on a mesh: data parallelism with nothing but ``jax.jit``.

The recipe (the jax "distributed arrays and automatic parallelization" one):

* the batch is split over the mesh's ``"data"`` axis on its leading dimension
  (:func:`shard_batch`, ``NamedSharding(mesh, P("data"))``);
* the parameters are replicated (:func:`replicate`) or, FSDP style, each leaf is split over the
  same axis along its largest divisible dimension (:func:`shard_params`);
* every function of nmelab - the curvature operators, the estimators, every regularizer's step -
  is then called *unchanged*: ``jax.jit`` sees sharded inputs and XLA partitions the program,
  inserting the all-reduces of the batch means. No ``pmap``, no ``shard_map``, no ``pmean``.

Why the results equal the single-device ones. nmelab's losses are batch *means* over the global
batch; under ``jit`` the mean is the global mean (XLA adds a cross-device sum), so every gradient,
Hessian-, GN- or NME-vector product, quadratic form and penalty is the same mathematical quantity
as on one device. Only the order of floating-point additions changes: results agree to float32
rounding (about 1e-7 relative), not bitwise. Random draws agree exactly because
``jax_threefry_partitionable`` (the default since JAX 0.5) makes ``jax.random`` independent of
sharding.

BatchNorm. A flax ``BatchNorm`` in train mode computes ``mean(x, axis=0)`` over the batch; with the
batch sharded under ``jit`` that is the *global* batch mean (synchronised BN) for free - no
``axis_name`` needed. (Inside ``shard_map``/``pmap`` it would be the per-device mean unless the
model is given ``bn_axis_name``; see :mod:`nmelab.parallel.msharpness`.)

Multi-host. With several processes (:func:`nmelab.parallel.initialize`) a mesh spans every
process's devices, and :func:`shard_batch` takes each process's *local* part of the batch (the
rows of its devices, as returned by :func:`nmelab.parallel.host_shard`) and assembles the global
array with :func:`jax.make_array_from_process_local_data`; :func:`replicate` assumes every process
holds the same values (same seed, same data).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nmelab.parallel.mesh import DATA_AXIS, check_mesh
from nmelab.types import Batch, Params, PyTree


def batch_sharding(mesh: Mesh, axis: str = DATA_AXIS) -> NamedSharding:
    """``NamedSharding(mesh, P(axis))``: the leading (batch) dimension split over ``axis``."""
    check_mesh(mesh, axis)
    return NamedSharding(mesh, P(axis))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """``NamedSharding(mesh, P())``: a full copy on every device of ``mesh``."""
    check_mesh(mesh, None)
    return NamedSharding(mesh, P())


def _leaf_paths(tree: Any) -> list[tuple[str, Any]]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in leaves]


def local_axis_size(mesh: Mesh, axis: str = DATA_AXIS) -> int:
    """How many positions of ``axis`` this process's devices hold (all of them with one process)."""
    check_mesh(mesh, axis)
    dim = mesh.axis_names.index(axis)
    me = jax.process_index()
    positions = {
        index[dim]
        for index in np.ndindex(mesh.devices.shape)
        if mesh.devices[index].process_index == me
    }
    return len(positions)


def _is_multiprocess(mesh: Mesh) -> bool:
    return len({d.process_index for d in mesh.devices.flat}) > 1


def _global_put(leaf: Any, sharding: NamedSharding) -> jax.Array:
    """``device_put`` that also handles typed PRNG keys across processes (same value on each)."""
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        impl = jax.random.key_impl(leaf)
        data = _global_put(jax.random.key_data(leaf), sharding)
        return jax.random.wrap_key_data(data, impl=impl)
    if _is_multiprocess(sharding.mesh):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return jax.device_put(leaf, sharding)
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.device_put(leaf, sharding)


def shard_batch(batch: Batch | PyTree, mesh: Mesh, axis: str = DATA_AXIS) -> Any:
    """Split every leaf of ``batch`` over the mesh axis ``axis`` along its leading dimension.

    The leaves keep their values; only their placement changes: device ``i`` of ``axis`` holds rows
    ``[i·B/n, (i+1)·B/n)`` of the global batch of ``B`` rows (replicated over other mesh axes).
    Pass the result to any nmelab function (under ``jit``) to run it data-parallel.

    Single process: ``batch`` is the global batch. Several processes: ``batch`` is this process's
    *local* part (its devices' rows, e.g. from :func:`nmelab.parallel.host_shard` applied to the
    global batch's indices) and the global batch is the concatenation in process order; every
    process must call this with equally sized local batches.

    Args:
      batch: ``(x, y)`` or any pytree of arrays sharing a leading batch dimension.
      mesh: the mesh (see :func:`nmelab.parallel.make_mesh`).
      axis: the mesh axis to split over.

    Returns:
      The same pytree of :class:`jax.Array` s, each ``NamedSharding(mesh, P(axis))``.

    Raises:
      ValueError: a scalar leaf, leaves with different leading sizes, or a batch size not
        divisible by the number of devices along ``axis`` (naming both).
      TypeError: ``mesh`` is not a Mesh.
    """
    local = local_axis_size(mesh, axis)
    sharding = NamedSharding(mesh, P(axis))
    multiprocess = _is_multiprocess(mesh)
    leaves = _leaf_paths(batch)
    if not leaves:
        raise ValueError("batch has no array leaves")
    sizes = {}
    for path, leaf in leaves:
        shape = np.shape(leaf)
        if not shape:
            raise ValueError(f"batch{path} must have a leading batch dimension, got a scalar")
        sizes[path or "<root>"] = shape[0]
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every leaf of batch must share the batch size, got {sizes}")
    size = next(iter(sizes.values()))
    if size % local:
        what = "local batch size of this process" if multiprocess else "batch size"
        raise ValueError(
            f"the {what} must be divisible by the {local} devices along mesh axis {axis!r} "
            f"(so that every device gets the same number of examples); got {size} examples. "
            f"Use a batch size that is a multiple of {local}, or a mesh with fewer devices"
        )

    def put(leaf: Any) -> jax.Array:
        if not multiprocess:
            return jax.device_put(leaf, sharding)
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return jax.device_put(leaf, sharding)
        return jax.make_array_from_process_local_data(sharding, np.asarray(leaf))

    return jax.tree.map(put, batch)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Put a full copy of every leaf of ``tree`` on every device of ``mesh``.

    With several processes every process must pass the same values (the same seed and data).

    Raises:
      TypeError: ``mesh`` is not a Mesh.
    """
    sharding = replicated_sharding(mesh)
    return jax.tree.map(lambda leaf: _global_put(leaf, sharding), tree)


def largest_divisible_axis(shape: tuple[int, ...], num: int) -> int | None:
    """The index of the largest dimension of ``shape`` divisible by ``num`` (the first on ties).

    ``None`` when no dimension is divisible (or ``shape`` is a scalar). With ``num == 1`` every
    dimension qualifies.
    """
    best = None
    for dim, size in enumerate(shape):
        if size % num == 0 and size >= num and (best is None or size > shape[best]):
            best = dim
    return best


def param_shardings(params: Params, mesh: Mesh, axis: str = DATA_AXIS) -> PyTree:
    """The FSDP shardings of :func:`shard_params`: a pytree of ``NamedSharding`` like ``params``.

    Each leaf is split over ``axis`` along its largest dimension divisible by the axis size, and
    replicated when none is (biases of odd width, scalars). Useful as ``out_shardings`` of a
    jitted init or as the target shardings of an Orbax restore.
    """
    check_mesh(mesh, axis)
    num = int(mesh.shape[axis])

    def spec(leaf: Any) -> NamedSharding:
        shape = tuple(np.shape(leaf))
        dim = largest_divisible_axis(shape, num)
        if dim is None or num == 1:
            return NamedSharding(mesh, P())
        return NamedSharding(mesh, P(*([None] * dim), axis))

    return jax.tree.map(spec, params)


def shard_params(params: Params, mesh: Mesh, axis: str = DATA_AXIS) -> Params:
    """Shard the parameters FSDP style: each leaf split over ``axis`` (see :func:`param_shardings`).

    The values are unchanged; every nmelab function accepts the result as it accepts replicated
    params, and ``jit`` gathers each weight where it is used (ZeRO-3 / FSDP). Gradients, HVPs and
    other parameter-shaped outputs come back with whatever sharding XLA chose; reshard them with
    ``jax.device_put(tree, param_shardings(params, mesh))`` if needed. Worth it only when the model
    does not fit one device's memory: on small models the gathers cost more than they save.

    Raises:
      TypeError: ``mesh`` is not a Mesh.
      ValueError: ``mesh`` has no axis ``axis``.
    """
    shardings = param_shardings(params, mesh, axis)
    return jax.tree.map(_global_put, params, shardings)


def constrain_batch(batch: Any, mesh: Mesh | None, axis: str = DATA_AXIS) -> Any:
    """Inside ``jit``: ask XLA to split ``batch``'s leading dimension over ``mesh``'s ``axis``.

    For batches built *inside* a jitted function (e.g. gathered by index from a device-resident
    training set), where :func:`shard_batch` cannot be applied. The mesh is passed in explicitly;
    ``mesh=None``, or a mesh whose ``axis`` has one device, returns ``batch`` unchanged, so code
    that calls it runs as before on one device. Works under ``vmap`` (the mapped axis stays
    unsharded). A leaf whose leading size is not divisible by the axis size is left unconstrained
    (XLA pads or replicates it).
    """
    if mesh is None:
        return batch
    num = int(check_mesh(mesh, axis).shape[axis])
    if num == 1:
        return batch
    sharding = NamedSharding(mesh, P(axis))

    def constrain(leaf: Any) -> Any:
        if not np.shape(leaf) or np.shape(leaf)[0] % num:
            return leaf
        return jax.lax.with_sharding_constraint(leaf, sharding)

    return jax.tree.map(constrain, batch)


# ------------------------------------------------------------------------------------------------
# trainer integration


class DataParallel:
    """The trainer's data-parallel settings: a mesh, placement, and optional m-sharpness.

    Built from a config by :meth:`from_config` (keys ``mesh_shape``, default ``None`` = every
    device on ``"data"``, and ``m_sharpness``, default ``False``). With one device in one process
    it is *disabled*: every method returns its input unchanged, so single-device runs are bitwise
    what they were. Otherwise:

    * :meth:`place` replicates the train state over the mesh;
    * :meth:`place_source` replicates a device-resident training/test set (every device gathers
      its part of each batch by index; the jitted step splits the batch with
      :func:`constrain_batch` over :attr:`mesh`);
    * :meth:`regularizer` wraps the regularizer with :func:`nmelab.parallel.per_shard` when
      ``m_sharpness`` is on (aux ``(logits, batch_stats)``: logits concatenated, statistics
      averaged).

    Attributes:
      mesh: the mesh, ``None`` when disabled.
      m_sharpness: per-shard regularizers.
    """

    def __init__(self, mesh: Mesh | None, m_sharpness: bool = False):
        self.mesh = mesh
        self.m_sharpness = bool(m_sharpness) and mesh is not None

    @classmethod
    def from_config(cls, config: Any) -> DataParallel:
        """Read ``mesh_shape`` and ``m_sharpness`` (missing keys take their defaults).

        Raises:
          ValueError: an invalid mesh shape, or a ``batch_size`` not divisible by the number of
            devices along ``"data"`` (naming both).
        """
        from nmelab.parallel.mesh import mesh_from_config

        get = config.get if hasattr(config, "get") else (lambda k, d=None: getattr(config, k, d))
        m_sharpness = get("m_sharpness", False)
        if not isinstance(m_sharpness, bool):
            raise ValueError(f"config.m_sharpness: expected True or False, got {m_sharpness!r}")
        mesh = mesh_from_config(config)
        if mesh.size == 1 and jax.process_count() == 1:
            return cls(None, False)
        num = int(mesh.shape[DATA_AXIS])
        batch_size = get("batch_size", None)
        if batch_size is not None and batch_size % num:
            raise ValueError(
                f"config.batch_size: expected a multiple of the {num} devices along mesh axis "
                f"'data' (mesh_shape={get('mesh_shape', None)!r}), got {batch_size}"
            )
        return cls(mesh, m_sharpness)

    @property
    def enabled(self) -> bool:
        """Whether there is more than one device (or process) to spread over."""
        return self.mesh is not None

    def place(self, tree: PyTree) -> PyTree:
        """Replicate ``tree`` (e.g. the train state) over the mesh."""
        return replicate(tree, self.mesh) if self.enabled else tree

    def place_source(self, source: Any) -> Any:
        """Replicate the device-resident arrays ``x_train, y_train, x_test, y_test`` of ``source``."""
        if self.enabled and getattr(source, "on_device", False):
            for name in ("x_train", "y_train", "x_test", "y_test"):
                if hasattr(source, name):
                    setattr(source, name, replicate(getattr(source, name), self.mesh))
        return source

    def regularizer(self, reg: Any, aux_reduction: Any = ("concat", "mean")) -> Any:
        """``per_shard(reg)`` with m-sharpness on, else ``reg``."""
        if not self.m_sharpness:
            return reg
        from nmelab.parallel.msharpness import per_shard

        return per_shard(reg, self.mesh, aux_reduction=aux_reduction)

    def __repr__(self) -> str:
        if not self.enabled:
            return "DataParallel(disabled: one device)"
        return f"DataParallel(mesh={dict(self.mesh.shape)}, m_sharpness={self.m_sharpness})"
