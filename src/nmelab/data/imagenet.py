"""ImageNet-style image folders: file lists in memory, JPEGs decoded by a Pillow process pool.

A damaged image never ends a run by itself. An image that Pillow cannot decode (truncated,
corrupt, not an image, unreadable) is skipped with a :class:`CorruptImageWarning` naming the file
and the reason, and recorded in :attr:`ImageFolder.corrupt_files` (once per file, across epochs
and splits). Skipping keeps a training batch's shape: the slot is filled with a copy of the next
good image of the same batch (and its label), so a jitted step is not recompiled and a sharded
batch stays divisible. An evaluation batch drops the image instead (a copy would be counted twice
in the accuracy). The run stops with :class:`CorruptImagesError` only when more than
:func:`corrupt_limit` distinct files of the folder are damaged: ``max(10, ⌊0.1 % · N⌋)`` for a
folder of ``N`` images, 1,331 for ImageNet-1k (1,331,167 images). Past that the copy of the
dataset itself is damaged, not a few files, and training on it would be silently wrong.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import multiprocessing
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from nmelab import validation
from nmelab.data.batching import epoch_keys, num_batches
from nmelab.data.dataset import key_words, readonly

__all__ = [
    "CORRUPT_FRACTION",
    "CORRUPT_MINIMUM",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "LAYOUT",
    "CorruptImageError",
    "CorruptImageWarning",
    "CorruptImagesError",
    "ImageFolder",
    "corrupt_limit",
    "decode_image",
    "default_resize_size",
    "image_batches",
    "imagenet",
    "normalize_imagenet",
]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
"""Per-channel ImageNet mean on the [0, 1] scale."""

IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
"""Per-channel ImageNet standard deviation on the [0, 1] scale."""

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")

CORRUPT_FRACTION = 0.001
"""The fraction of a folder's images that may be damaged before :func:`image_batches` stops."""

CORRUPT_MINIMUM = 10
"""The number of damaged images always tolerated, however small the folder."""


class CorruptImageWarning(UserWarning):
    """An image could not be decoded and was skipped (the message names the file)."""


class CorruptImageError(OSError):
    """One image could not be read or decoded (the message names the file and the reason)."""


class CorruptImagesError(OSError):
    """More damaged images than :func:`corrupt_limit` allows: the copy of the dataset is damaged."""


def corrupt_limit(num_images: int) -> int:
    """The most damaged images a folder of ``num_images`` may hold: ``max(10, ⌊0.1 % · N⌋)``."""
    return max(CORRUPT_MINIMUM, int(CORRUPT_FRACTION * num_images))


LAYOUT = """expected layout (class index = position of the class folder name in sorted order):
  <data_dir>/train/<class>/*.JPEG
  <data_dir>/val/<class>/*.JPEG      (the same class folder names as train, or a subset)"""


@dataclasses.dataclass(frozen=True, eq=False)
class ImageFolder:
    """File lists of an image-folder dataset; images are decoded per batch by :func:`image_batches`.

    Attributes:
      train_files: paths of the training images.
      y_train: ``(N_train,)`` int32 labels.
      test_files: paths of the validation images.
      y_test: ``(N_test,)`` int32 labels.
      classes: class folder names, sorted; label ``i`` is ``classes[i]``.
      name: short name, ``"imagenet"``.
      corrupt_files: ``{path: reason}`` of the images found damaged so far by
        :func:`image_batches` (shared with the copies :func:`dataclasses.replace` makes, so that
        the count covers every split and epoch).
    """

    train_files: tuple[str, ...]
    y_train: np.ndarray
    test_files: tuple[str, ...]
    y_test: np.ndarray
    classes: tuple[str, ...]
    name: str = "imagenet"
    corrupt_files: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def num_train(self) -> int:
        """Number of training images."""
        return len(self.train_files)

    @property
    def num_test(self) -> int:
        """Number of validation images."""
        return len(self.test_files)


def _list_split(
    root: Path, classes: Sequence[str] | None
) -> tuple[list[str], list[int], list[str]]:
    if not root.is_dir():
        raise FileNotFoundError(f"imagenet: missing folder {str(root)!r}; {LAYOUT}")
    found = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not found:
        raise FileNotFoundError(f"imagenet: no class folders in {str(root)!r}; {LAYOUT}")
    classes = found if classes is None else list(classes)
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(found) - set(index))
    if unknown:
        raise ValueError(
            f"imagenet: {str(root)!r} has class folders absent from train: {unknown[:5]}; {LAYOUT}"
        )
    files, labels = [], []
    for name in found:
        names = sorted(
            e.name
            for e in os.scandir(root / name)
            if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        files += [str(root / name / f) for f in names]
        labels += [index[name]] * len(names)
    if not files:
        raise FileNotFoundError(f"imagenet: no images under {str(root)!r}; {LAYOUT}")
    return files, labels, classes


def imagenet(data_dir: str | Path, train_dir: str = "train", test_dir: str = "val") -> ImageFolder:
    """List an ImageNet-style folder (see :data:`LAYOUT`); nothing is decoded here.

    Args:
      data_dir: the root folder.
      train_dir: name of the training sub-folder.
      test_dir: name of the validation sub-folder.

    Raises:
      FileNotFoundError: missing folders or no images (the message shows the expected layout).
      ValueError: validation classes that the training split does not have.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"imagenet: data_dir {str(root)!r} "
            + ("is a file, not a folder" if root.exists() else "does not exist")
            + f"; {LAYOUT}"
        )
    train_files, y_train, classes = _list_split(root / train_dir, None)
    test_files, y_test, _ = _list_split(root / test_dir, classes)
    return ImageFolder(
        tuple(train_files),
        readonly(np.asarray(y_train, np.int32)),
        tuple(test_files),
        readonly(np.asarray(y_test, np.int32)),
        tuple(classes),
    )


def _random_resized_crop_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> tuple[int, int, int, int]:
    """Inception-style crop box ``(left, top, w, h)``, the algorithm of torchvision's."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def default_resize_size(image_size: int) -> int:
    """The evaluation resize for a crop of ``image_size``: the standard 256/224 ratio."""
    return int(round(image_size * 256 / 224))


def decode_image(
    path: str,
    seed: Sequence[int] | None,
    image_size: int = 224,
    resize_size: int | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """Decode one image to uint8 ``(image_size, image_size, 3)``.

    With a ``seed`` (training): random-resized-crop (area fraction ``scale``, aspect ``ratio``)
    resized bilinearly to ``image_size``, then a horizontal flip with probability 1/2, all drawn
    from ``numpy.random.default_rng(seed)``. Without (evaluation): resize the shorter side to
    ``resize_size`` (default ``round(image_size * 256 / 224)``, 256 for 224), then take the central
    ``image_size`` square.

    Raises:
      CorruptImageError: the file is missing, unreadable or not a decodable image (the message
        names it).
    """
    from PIL import Image

    if resize_size is None:
        resize_size = default_resize_size(image_size)
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")  # forces the decode: a truncated file fails here
    except Exception as err:  # Pillow's decoders raise OSError, SyntaxError, ValueError, ...
        raise CorruptImageError(f"imagenet: cannot decode {str(path)!r}: {err}") from err
    if seed is not None:
        rng = np.random.default_rng(list(seed))
        left, top, w, h = _random_resized_crop_box(img.width, img.height, rng, scale, ratio)
        img = img.resize(
            (image_size, image_size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h)
        )
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    else:
        short = min(img.width, img.height)
        w = max(image_size, round(img.width * resize_size / short))
        h = max(image_size, round(img.height * resize_size / short))
        img = img.resize((w, h), Image.Resampling.BILINEAR)
        left, top = int(round((w - image_size) / 2)), int(round((h - image_size) / 2))
        img = img.crop((left, top, left + image_size, top + image_size))
    return np.asarray(img, dtype=np.uint8)


def _decode_chunk(
    tasks: list[tuple[str, tuple[int, ...] | None]], options: dict[str, Any]
) -> tuple[np.ndarray, dict[int, str]]:
    """Decode ``tasks``; return the images (zeros where damaged) and ``{position: reason}``."""
    side = options["image_size"]
    images = np.zeros((len(tasks), side, side, 3), np.uint8)
    damaged = {}
    for i, (path, seed) in enumerate(tasks):
        try:
            images[i] = decode_image(path, seed, **options)
        except CorruptImageError as err:
            damaged[i] = str(err.__cause__ or err)
    return images, damaged


def normalize_imagenet(x: Any) -> Any:
    """Map uint8 ``(..., 3)`` pixels to float32 ``(x / 255 - mean) / std`` (numpy or jax input)."""
    if isinstance(x, jax.Array):
        return (x.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return ((x.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def _skip_damaged(
    folder: ImageFolder,
    batch_files: list[str],
    x: np.ndarray,
    y: np.ndarray,
    damaged: dict[int, str],
    *,
    fill: bool,
    limit: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Record and warn about the damaged images of one batch; return the batch without them.

    With ``fill`` (training) each damaged slot gets a copy of the next good image of the batch
    (cyclically) and its label, so the batch keeps its size; otherwise the slots are dropped.
    Returns ``None`` for an evaluation batch with no good image left.

    Raises:
      CorruptImagesError: more than ``limit`` distinct damaged files in the folder, or a training
        batch with no good image to fill from.
    """
    for position, reason in sorted(damaged.items()):
        path = batch_files[position]
        if path not in folder.corrupt_files:
            folder.corrupt_files[path] = reason
            warnings.warn(
                f"imagenet: skipped damaged image {path!r} ({reason}); "
                f"{len(folder.corrupt_files)} damaged so far, the run stops past {limit}",
                CorruptImageWarning,
                stacklevel=3,
            )
    if len(folder.corrupt_files) > limit:
        listed = "; ".join(f"{p!r} ({r})" for p, r in list(folder.corrupt_files.items())[:5])
        raise CorruptImagesError(
            f"imagenet: {len(folder.corrupt_files)} images could not be decoded, more than the "
            f"{limit} tolerated (max({CORRUPT_MINIMUM}, {CORRUPT_FRACTION:.1%} of the folder's "
            f"{folder.num_train + folder.num_test} images)); the copy of the dataset looks "
            f"damaged: re-extract it or remove the files. First ones: {listed}"
        )
    good = [i for i in range(len(x)) if i not in damaged]
    if not fill:
        return (x[good], y[good]) if good else None
    if not good:
        named = ", ".join(repr(batch_files[p]) for p in sorted(damaged)[:5])
        raise CorruptImagesError(
            f"imagenet: all {len(x)} images of a training batch are damaged, nothing to fill the "
            f"batch with: {named}"
        )
    source = np.arange(len(x))
    for position in damaged:
        source[position] = next((g for g in good if g > position), good[0])
    return x[source], y[source]


def image_batches(
    folder: ImageFolder,
    batch_size: int,
    key: jax.Array,
    epoch: int = 0,
    *,
    split: str = "train",
    image_size: int = 224,
    resize_size: int | None = None,
    num_workers: int = 0,
    normalize: bool = True,
    drop_remainder: bool | None = None,
    start_step: int = 0,
    prefetch: int = 2,
    executor: concurrent.futures.Executor | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield decoded ``(x, y)`` batches of one epoch of an :class:`ImageFolder`.

    ``split="train"``: shuffled by :func:`nmelab.data.epoch_permutation` order and augmented
    (random-resized-crop + flip); ``split="test"``: in file order, resize ``resize_size`` + centre
    crop, last partial batch kept. Each training image is augmented with a generator seeded by
    ``(augmentation key of the epoch, epoch, image index)``, so the batches are a pure function of
    ``(key, epoch)`` whatever ``num_workers`` is.

    Args:
      folder: from :func:`imagenet`.
      batch_size: images per batch.
      key: ``jax.random`` key of the run (ignored for ``split="test"``).
      epoch: epoch index.
      split: ``"train"`` or ``"test"``.
      image_size: side of the output crop (224).
      resize_size: shorter side before the evaluation centre crop; default
        ``round(image_size * 256 / 224)`` (256 for 224).
      num_workers: decoding processes, started with ``spawn`` (forking a process that runs JAX
        can deadlock), so a calling script needs the ``if __name__ == "__main__":`` guard;
        0 decodes in-process.
      normalize: float32 standardised with :data:`IMAGENET_MEAN`/:data:`IMAGENET_STD`; ``False``
        yields uint8 (cheaper to transfer; normalise on device with :func:`normalize_imagenet`).
      drop_remainder: default ``True`` for train, ``False`` for test.
      start_step: first batch to yield, to resume mid-epoch.
      prefetch: batches decoded ahead when ``num_workers > 0``.
      executor: an existing pool to reuse across epochs (then ``num_workers`` only sets the
        chunking); by default a pool is created and shut down with the iterator.

    Yields:
      ``x`` ``(B, image_size, image_size, 3)`` and int32 ``y`` ``(B,)``. A damaged image is skipped
      with a :class:`CorruptImageWarning` (see the module docstring): a training batch keeps ``B``
      by repeating a good image of the same batch, an evaluation batch gets smaller.

    Raises:
      ValueError: a bad ``split``, ``batch_size`` or ``start_step``.
      CorruptImagesError: more damaged images than :func:`corrupt_limit` allows.
    """
    validation.check_choice(split, "split", ("train", "test"))
    validation.check_count(batch_size, "batch_size")
    train = split == "train"
    files = folder.train_files if train else folder.test_files
    labels = np.asarray(folder.y_train if train else folder.y_test)
    drop_remainder = train if drop_remainder is None else drop_remainder
    total = num_batches(len(files), batch_size, drop_remainder)
    if not 0 <= start_step <= total:
        raise ValueError(f"start_step: expected 0..{total}, got {start_step}")
    if train:
        permutation_key, augmentation_key = epoch_keys(key, epoch)
        order = np.asarray(jax.random.permutation(permutation_key, len(files)))
        words = key_words(augmentation_key)
    else:
        order = np.arange(len(files))
    options = {"image_size": image_size, "resize_size": resize_size}

    def chunks(step: int) -> list[list[tuple[str, tuple[int, ...] | None]]]:
        idx = order[step * batch_size : (step + 1) * batch_size]
        tasks = [(files[i], (*words, epoch, int(i)) if train else None) for i in idx]
        size = max(1, -(-len(tasks) // max(1, num_workers)))
        return [tasks[j : j + size] for j in range(0, len(tasks), size)]

    limit = corrupt_limit(folder.num_train + folder.num_test)

    def finish(
        step: int, parts: list[tuple[np.ndarray, dict[int, str]]]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        idx = order[step * batch_size : (step + 1) * batch_size]
        x, y = np.concatenate([images for images, _ in parts]), labels[idx]
        damaged, offset = {}, 0
        for images, bad in parts:
            damaged.update({offset + i: reason for i, reason in bad.items()})
            offset += len(images)
        if damaged:
            batch_files = [files[i] for i in idx]
            kept = _skip_damaged(folder, batch_files, x, y, damaged, fill=train, limit=limit)
            if kept is None:
                return None
            x, y = kept
        return (normalize_imagenet(x) if normalize else x), y

    steps = range(start_step, total)
    if num_workers <= 0 and executor is None:
        for step in steps:
            batch = finish(step, [_decode_chunk(c, options) for c in chunks(step)])
            if batch is not None:
                yield batch
        return

    own = executor is None
    if own:
        executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=num_workers, mp_context=multiprocessing.get_context("spawn")
        )
    pending: collections.deque = collections.deque()
    step_iter = iter(steps)
    try:

        def submit_next() -> None:
            step = next(step_iter, None)
            if step is not None:
                futures = [executor.submit(_decode_chunk, c, options) for c in chunks(step)]
                pending.append((step, futures))

        for _ in range(max(1, prefetch)):
            submit_next()
        while pending:
            step, futures = pending.popleft()
            submit_next()
            batch = finish(step, [f.result() for f in futures])
            if batch is not None:
                yield batch
    finally:
        for _, futures in pending:
            for f in futures:
                f.cancel()
        if own:
            executor.shutdown(wait=True, cancel_futures=True)
