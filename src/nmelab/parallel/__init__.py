"""Data-parallel and multi-host nmelab on JAX's own sharding runtime (no runtime of our own).

Data parallelism is a question of *placement*, not of code: put the batch on a mesh and call the
same functions.

>>> mesh = nmelab.parallel.make_mesh()                       # every device on axis "data"
>>> batch = nmelab.parallel.shard_batch(batch, mesh)         # doctest: +SKIP
>>> params = nmelab.parallel.replicate(params, mesh)         # or shard_params (FSDP)  # doctest: +SKIP
>>> nmelab.trace_split(objective, params, batch, key, 64)    # unchanged, now data-parallel  # doctest: +SKIP
>>> step(reg, params, batch, key)                            # any regularizer, under jit  # doctest: +SKIP

Every curvature operator, estimator and regularizer step then equals its single-device result to
float32 rounding, and train-mode BatchNorm uses the global batch statistics
(:mod:`~nmelab.parallel.sharding`). The pieces:

* :mod:`~nmelab.parallel.mesh` - :func:`make_mesh` (``AxisType.Auto`` axes), :func:`mesh_from_config`;
* :mod:`~nmelab.parallel.sharding` - :func:`shard_batch`, :func:`replicate`, :func:`shard_params`
  (FSDP), :func:`constrain_batch` (inside ``jit``), :class:`DataParallel` (the trainer's
  ``mesh_shape`` / ``m_sharpness`` config keys);
* :mod:`~nmelab.parallel.msharpness` - :func:`per_shard`: SAM and the penalties per shard
  (m-sharpness) with ``shard_map``, and :func:`per_shard_map`;
* :mod:`~nmelab.parallel.multihost` - :func:`initialize` (``jax.distributed``), :func:`host_shard`,
  Orbax restore targets; the SLURM recipe is in ``docs/multihost.md``.
"""

from nmelab.parallel.mesh import (
    DATA_AXIS,
    axis_size,
    check_mesh,
    make_mesh,
    mesh_from_config,
    parse_mesh_shape,
)
from nmelab.parallel.msharpness import AUX_REDUCTIONS, PerShard, per_shard, per_shard_map
from nmelab.parallel.multihost import (
    ProcessInfo,
    abstract_with_shardings,
    host_shard,
    host_slice,
    initialize,
    process_info,
)
from nmelab.parallel.sharding import (
    DataParallel,
    batch_sharding,
    constrain_batch,
    largest_divisible_axis,
    local_axis_size,
    param_shardings,
    replicate,
    replicated_sharding,
    shard_batch,
    shard_params,
)

__all__ = [
    "AUX_REDUCTIONS",
    "DATA_AXIS",
    "DataParallel",
    "PerShard",
    "ProcessInfo",
    "abstract_with_shardings",
    "axis_size",
    "batch_sharding",
    "check_mesh",
    "constrain_batch",
    "host_shard",
    "host_slice",
    "initialize",
    "largest_divisible_axis",
    "local_axis_size",
    "make_mesh",
    "mesh_from_config",
    "param_shardings",
    "parse_mesh_shape",
    "per_shard",
    "per_shard_map",
    "process_info",
    "replicate",
    "replicated_sharding",
    "shard_batch",
    "shard_params",
]
