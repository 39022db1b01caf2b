"""Multi-host runs: ``jax.distributed`` start-up, per-host data shards, Orbax checkpoints.

A multi-host JAX program is one Python process per host (or per GPU), all running the same code
(SPMD, "multi-controller"). After :func:`initialize`, :func:`jax.devices` lists every device of
every process, a :func:`~nmelab.parallel.make_mesh` mesh spans them all, and a jitted function
whose inputs are global :class:`jax.Array` s runs on all of them, with the cross-host all-reduces
inserted by XLA (NCCL on GPUs, gloo on CPUs). Nothing else changes: the same nmelab functions run
on one device, on many local devices and on many hosts.

Data. Each process loads only its own shard of the data (:func:`host_shard`): with the mesh's
devices ordered process by process, process ``p`` owns the contiguous rows
``[p·B/P, (p+1)·B/P)`` of every global batch of ``B`` rows, and
:func:`nmelab.parallel.shard_batch` assembles the global batch from the local parts. Taking
``host_shard`` of each global batch's *indices* reproduces the single-process batches exactly.

Checkpoints. Orbax handles multi-host checkpoints when the saved leaves are global ``jax.Array`` s:
every process calls ``save`` with the same tree, each writes the shards it owns (one copy of
replicated arrays), and the primary process writes the metadata and commits the step. The checkpoint
folder must be on a filesystem every host sees. To restore, pass target shardings
(:func:`abstract_with_shardings`), e.g. replicated on the new mesh: Orbax reads on every process
only the shards its devices need, so a checkpoint written on one mesh can be restored on another.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

CLUSTER_ENV_VARS: tuple[str, ...] = (
    "JAX_COORDINATOR_ADDRESS",
    "SLURM_JOB_ID",
    "OMPI_COMM_WORLD_SIZE",
)
"""Environment variables :func:`initialize` reads: a default coordinator address, and the
SLURM / Open MPI markers that make it ask JAX to auto-detect the cluster."""


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
    """Where this process sits in a (possibly single-process) run.

    Attributes:
      process_index: this process, ``0 <= process_index < process_count``.
      process_count: the number of processes.
      local_device_count: devices driven by this process.
      device_count: devices of all processes.
    """

    process_index: int
    process_count: int
    local_device_count: int
    device_count: int

    @property
    def is_main(self) -> bool:
        """Whether this is process 0 (the one that writes logs and summaries)."""
        return self.process_index == 0


def process_info() -> ProcessInfo:
    """The :class:`ProcessInfo` of this process (initialises the JAX backend)."""
    return ProcessInfo(
        jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count()
    )


def _slurm_multi_task() -> bool:
    try:
        return int(os.environ.get("SLURM_NTASKS", os.environ.get("SLURM_NPROCS", "1"))) > 1
    except ValueError:
        return False


def _cluster_detected() -> bool:
    if "SLURM_JOB_ID" in os.environ and "SLURM_STEP_NODELIST" in os.environ:
        return _slurm_multi_task()
    try:
        return int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: int | Sequence[int] | None = None,
    initialization_timeout: int = 300,
) -> ProcessInfo:
    """Start multi-process JAX with :func:`jax.distributed.initialize`; a no-op for one process.

    Call it first thing in every process, before any JAX computation (JAX refuses to initialise
    the distributed runtime once a backend exists). Behaviour:

    * already initialised: nothing happens;
    * ``num_processes == 1``: nothing happens (a plain single-process run);
    * explicit ``coordinator_address``, ``num_processes`` and ``process_id``: passed on;
    * ``coordinator_address=None`` reads ``$JAX_COORDINATOR_ADDRESS`` (if set);
    * all three ``None``: if a cluster is detected (a SLURM step with more than one task, or Open
      MPI with more than one rank) JAX's auto-detection fills them in (SLURM: the first node of the step is the coordinator, port from the job id, process id
      ``SLURM_PROCID``, and ``local_device_ids = [SLURM_LOCALID]``: one GPU per task); otherwise
      nothing happens.

    Trap (SLURM, one task per node): auto-detection makes only GPU ``SLURM_LOCALID = 0`` visible.
    With one process per node driving all its GPUs pass ``local_device_ids=range(num_gpus)`` or
    export ``JAX_LOCAL_DEVICE_IDS=0,1,...`` (see ``docs/multihost.md``).

    Args:
      coordinator_address: ``"host:port"`` of process 0's coordinator service.
      num_processes: the number of processes.
      process_id: this process's index.
      local_device_ids: the local devices this process drives (GPU ordinals).
      initialization_timeout: seconds to wait for every process to connect.

    Returns:
      This process's :class:`ProcessInfo`.

    Raises:
      ValueError: only some of the three arguments given, or an out-of-range ``process_id``.
      RuntimeError: a JAX backend already exists in this process (from JAX).
    """
    if jax.distributed.is_initialized():
        return process_info()
    if num_processes is not None:
        if (
            isinstance(num_processes, bool)
            or not isinstance(num_processes, int)
            or num_processes < 1
        ):
            raise ValueError(f"num_processes must be an integer >= 1, got {num_processes!r}")
        if num_processes == 1:
            return process_info()
    if coordinator_address is None and num_processes is not None:
        coordinator_address = os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    given = [a is not None for a in (coordinator_address, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError(
            "initialize: pass coordinator_address, num_processes and process_id together (or "
            f"none of them, to auto-detect a cluster); got coordinator_address="
            f"{coordinator_address!r}, num_processes={num_processes!r}, process_id={process_id!r}"
        )
    if all(given):
        if (
            isinstance(process_id, bool)
            or not isinstance(process_id, int)
            or not (0 <= process_id < num_processes)
        ):
            raise ValueError(
                f"process_id must be an integer in [0, {num_processes}), got {process_id!r}"
            )
    elif not _cluster_detected():
        return process_info()
    if local_device_ids is not None and not isinstance(local_device_ids, int):
        local_device_ids = [int(i) for i in local_device_ids]
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
    )
    return process_info()


def host_slice(
    num: int,
    process_index: int | None = None,
    process_count: int | None = None,
    *,
    drop_remainder: bool = True,
) -> slice:
    """The contiguous block of ``range(num)`` that process ``process_index`` owns.

    ``drop_remainder=True``: every process gets ``num // process_count`` items (the last
    ``num % process_count`` are dropped, so every host takes the same number of steps).
    ``False``: :func:`numpy.array_split` blocks (the first ``num % process_count`` get one more).

    Raises:
      ValueError: a negative ``num`` or an out-of-range process index or count.
    """
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    for name, value, low in (("process_count", count, 1), ("process_index", index, 0)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if index >= count:
        raise ValueError(f"process_index must be < process_count = {count}, got {index}")
    if isinstance(num, bool) or not isinstance(num, int | np.integer) or num < 0:
        raise ValueError(f"the number of items must be an integer >= 0, got {num!r}")
    if drop_remainder:
        size = num // count
        return slice(index * size, (index + 1) * size)
    base, extra = divmod(num, count)
    start = index * base + min(index, extra)
    return slice(start, start + base + (1 if index < extra else 0))


def host_shard(
    data: Any,
    process_index: int | None = None,
    process_count: int | None = None,
    *,
    drop_remainder: bool = True,
) -> Any:
    """This process's contiguous shard of a dataset, a batch or a list of indices.

    Process ``p`` of ``P`` gets rows ``[p·n/P, (p+1)·n/P)`` (see :func:`host_slice`), the rows its
    devices hold when the global array is assembled by :func:`nmelab.parallel.shard_batch` on a
    mesh of :func:`jax.devices` (ordered process by process). So:

    * ``host_shard(global_batch_indices)`` per step gives each host exactly its part of the
      single-process batch (the multi-host run then computes the single-process step);
    * ``host_shard(num_files)`` or ``host_shard(file_list)`` gives each host the files it alone
      loads (each host then draws its batches from its own shard: a different but equally valid
      data order).

    Args:
      data: an int ``n`` (shard ``range(n)``: returns indices), a numpy / jax array or a list /
        range (rows), a tuple or dict of arrays sharing their leading dimension (e.g. ``(x, y)``),
        or an :class:`nmelab.data.Dataset` (its training split is sharded, the test split kept).
      process_index: this process (default :func:`jax.process_index`).
      process_count: the number of processes (default :func:`jax.process_count`).
      drop_remainder: give every process the same number of rows (default).

    Returns:
      The same kind of object holding only this process's rows.

    Raises:
      ValueError: out-of-range process arguments, or leaves with different leading sizes.
      TypeError: an unsupported ``data``.
    """
    from nmelab.data.dataset import Dataset

    def block(num: int) -> slice:
        return host_slice(num, process_index, process_count, drop_remainder=drop_remainder)

    if isinstance(data, bool):
        raise TypeError(f"data must be a count, an array, a sequence or a dataset, got {data!r}")
    if isinstance(data, int | np.integer):
        return np.arange(int(data))[block(int(data))]
    if isinstance(data, Dataset):
        rows = block(data.num_train)
        return dataclasses.replace(
            data, x_train=np.asarray(data.x_train)[rows], y_train=np.asarray(data.y_train)[rows]
        )
    if isinstance(data, list | range):
        return np.asarray(data)[block(len(data))]
    if isinstance(data, np.ndarray | jax.Array):
        if data.ndim == 0:
            raise ValueError("data must have a leading dimension to shard, got a scalar array")
        return data[block(data.shape[0])]
    if isinstance(data, tuple | dict):
        leaves = jax.tree.leaves(data)
        sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
        if not leaves or None in sizes or len(sizes) != 1:
            raise ValueError(
                "data: every leaf of a tuple/dict must be an array with the same leading size, "
                f"got leading sizes {sorted(s for s in sizes if s is not None)}"
                + (" and scalars" if None in sizes else "")
            )
        rows = block(sizes.pop())
        return jax.tree.map(lambda leaf: leaf[rows], data)
    raise TypeError(
        "data must be an int, an array, a list/range, a tuple/dict of arrays or an "
        f"nmelab.data.Dataset, got {type(data).__name__}"
    )


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
    """``jax.ShapeDtypeStruct`` leaves of ``tree`` carrying ``shardings``: an Orbax restore target.

    Args:
      tree: arrays or ``ShapeDtypeStruct`` s (e.g. ``jax.eval_shape`` of the init).
      shardings: one :class:`jax.sharding.Sharding` for every leaf, or a pytree of them like
        ``tree`` (e.g. :func:`nmelab.parallel.param_shardings`).

    Example:
      >>> target = abstract_with_shardings(jax.eval_shape(init), replicated_sharding(mesh))  # doctest: +SKIP
      >>> state = checkpointer.restore(target, ...)                                        # doctest: +SKIP
    """
    if isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=shardings), tree
        )
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s), tree, shardings
    )
