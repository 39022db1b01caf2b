"""Device meshes: which devices a run uses and how they are laid out.

nmelab runs data-parallel on JAX's own sharding runtime: a :class:`jax.sharding.Mesh` with a
``"data"`` axis, arrays placed with :class:`~jax.sharding.NamedSharding`, and plain ``jax.jit``
everywhere else (XLA partitions the computation; there is no runtime of our own).

Trap: since JAX 0.7 :func:`jax.make_mesh` defaults to *Explicit* axis types, under which sharding
becomes part of every array's type and many ordinary programs (reshapes of a sharded axis, ``vmap``
of a constraint) are rejected. nmelab always builds meshes with ``AxisType.Auto`` (the classic GSPMD
behaviour: shardings are hints that XLA propagates).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

DATA_AXIS = "data"
"""The name of the mesh axis the batch is split over."""


def _check_axis_names(axis_names: Any) -> tuple[str, ...]:
    if isinstance(axis_names, str) or not isinstance(axis_names, Sequence):
        raise TypeError(f"axis_names must be a sequence of strings, got {axis_names!r}")
    names = tuple(axis_names)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"axis_names must be non-empty strings, got {axis_names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"axis_names must be distinct, got {axis_names!r}")
    return names


def parse_mesh_shape(shape: Any) -> tuple[int, ...] | None:
    """Normalise a mesh shape from code, a config or the command line.

    Accepts ``None`` (all devices), an int (``4``), a sequence (``(2, 2)``) or a string
    (``"4"``, ``"2x2"``, ``"2,2"``).

    Raises:
      ValueError: an empty shape, a non-positive or non-integer size, or an unparsable string.
    """
    if shape is None:
        return None
    if isinstance(shape, str):
        text = shape.strip().strip("()[]").replace("x", ",").replace("*", ",")
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            shape = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(
                f"mesh_shape must look like '4', '2x2' or '2,2', got {shape!r}"
            ) from None
    elif isinstance(shape, int | np.integer) and not isinstance(shape, bool):
        shape = (int(shape),)
    elif isinstance(shape, Sequence):
        shape = tuple(shape)
    else:
        raise ValueError(f"mesh_shape must be None, an int, a sequence or a string, got {shape!r}")
    if not shape or any(
        isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 1 for s in shape
    ):
        raise ValueError(f"mesh_shape must be a non-empty tuple of integers >= 1, got {shape!r}")
    return tuple(int(s) for s in shape)


def make_mesh(
    shape: Any = None,
    axis_names: Sequence[str] = (DATA_AXIS,),
    *,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A mesh of ``shape`` over the first ``prod(shape)`` devices, every axis ``AxisType.Auto``.

    Args:
      shape: the mesh shape (see :func:`parse_mesh_shape`); ``None`` puts every device on one
        axis. With one axis name and an int or 1-tuple, ``shape`` is the number of devices used.
      axis_names: one name per mesh axis; the batch is split over ``"data"``.
      devices: the devices to use (default :func:`jax.devices`: every device of every process,
        which is all local devices in a single-process run). Their order is kept: in a multi-host
        run JAX lists devices process by process, so consecutive ``"data"`` positions live on the
        same host and each host owns one contiguous block of the global batch.

    Returns:
      A :class:`jax.sharding.Mesh`.

    Raises:
      ValueError: a shape with a different number of axes than ``axis_names``, or more devices
        than exist; in a multi-process run a mesh that does not span every process.
      TypeError: malformed ``axis_names``.

    Example:
      >>> mesh = make_mesh()                                     # all devices on "data"
      >>> mesh = make_mesh((2, 2), ("data", "model"))            # doctest: +SKIP
    """
    names = _check_axis_names(axis_names)
    available = list(jax.devices() if devices is None else devices)
    if not available:
        raise ValueError("devices must be a non-empty sequence of jax devices, got none")
    dims = parse_mesh_shape(shape)
    if dims is None:
        if len(names) != 1:
            raise ValueError(
                f"shape=None puts every device on one axis, but {len(names)} axis_names were "
                f"given ({names}); pass an explicit shape"
            )
        dims = (len(available),)
    if len(dims) != len(names):
        raise ValueError(
            f"mesh shape {dims} has {len(dims)} axes but axis_names {names} has {len(names)}"
        )
    size = math.prod(dims)
    if size > len(available):
        raise ValueError(
            f"mesh shape {dims} needs {size} devices, but only {len(available)} are available "
            f"({available[0].platform}); on CPU, simulate more with "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N set before importing jax"
        )
    chosen = available[:size]
    if jax.process_count() > 1 and devices is None:
        processes = {d.process_index for d in chosen}
        if len(processes) != jax.process_count():
            raise ValueError(
                f"mesh shape {dims} uses devices of processes {sorted(processes)} only, but "
                f"{jax.process_count()} processes take part; every process must own part of the "
                "mesh (use all devices: shape=None)"
            )
    return jax.make_mesh(dims, names, axis_types=(AxisType.Auto,) * len(names), devices=chosen)


def mesh_from_config(config: Any) -> Mesh:
    """The mesh of a training config: its ``mesh_shape`` key (``None``: every device on ``data``).

    ``config`` may be an ``ml_collections.ConfigDict``, a mapping, or the ``mesh_shape`` value
    itself. A multi-axis shape must come with ``mesh_axis_names`` (first axis ``"data"`` unless
    named otherwise).

    Raises:
      ValueError: see :func:`make_mesh`.
    """
    if hasattr(config, "get") and callable(config.get):
        shape = config.get("mesh_shape", None)
        names = config.get("mesh_axis_names", None)
    else:
        shape, names = config, None
    dims = parse_mesh_shape(shape)
    if names is None:
        names = (DATA_AXIS,) if dims is None or len(dims) == 1 else None
        if names is None:
            names = (DATA_AXIS, *(f"axis{i}" for i in range(1, len(dims))))
    return make_mesh(dims, tuple(names))


def axis_size(mesh: Mesh, axis: str = DATA_AXIS) -> int:
    """The number of devices along ``axis`` of ``mesh``.

    Raises:
      ValueError: ``mesh`` has no such axis (naming the axes it has).
      TypeError: ``mesh`` is not a :class:`jax.sharding.Mesh`.
    """
    check_mesh(mesh, axis)
    return int(mesh.shape[axis])


def check_mesh(mesh: Any, axis: str | None = DATA_AXIS) -> Mesh:
    """Require a concrete :class:`jax.sharding.Mesh` with an axis named ``axis``; return it.

    ``axis=None`` checks only the type.

    Raises:
      TypeError: not a Mesh.
      ValueError: no axis ``axis``.
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"mesh must be a jax.sharding.Mesh (see nmelab.parallel.make_mesh), got "
            f"{type(mesh).__name__}"
        )
    if axis is not None and axis not in mesh.axis_names:
        raise ValueError(f"mesh has no axis {axis!r}; its axes are {tuple(mesh.axis_names)}")
    return mesh
