import jax
import numpy as np
import pytest
from PIL import Image

from nmelab import data
from nmelab.data.imagenet import _random_resized_crop_box

KEY = jax.random.key(0)
SIZES = {"image_size": 16, "resize_size": 20}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 3), ("val", 2)):
        for cls in ("n02", "n01"):  # listed out of order on purpose
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                size = (40, 40) if i else (48, 36)  # one non-square image per class
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"img_{i}.JPEG", quality=90)
    (root / "train" / "n01" / "notes.txt").write_text("not an image")
    return data.imagenet(root)


def collect(batches):
    xs, ys = zip(*batches, strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def test_listing(folder):
    assert folder.classes == ("n01", "n02") and folder.num_classes == 2
    assert folder.num_train == 6 and folder.num_test == 4
    assert folder.y_train.tolist() == [0, 0, 0, 1, 1, 1]
    assert all("/n01/" in f for f in folder.train_files[:3])


def test_train_batches_deterministic_across_workers(folder):
    in_process = list(data.image_batches(folder, 2, KEY, 0, **SIZES))
    pooled = list(data.image_batches(folder, 2, KEY, 0, num_workers=2, **SIZES))
    assert len(in_process) == 3
    for (xa, ya), (xb, yb) in zip(in_process, pooled, strict=True):
        assert xa.shape == (2, 16, 16, 3) and xa.dtype == np.float32
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    x, y = collect(in_process)
    order = np.asarray(data.epoch_permutation(6, KEY, 0))
    np.testing.assert_array_equal(y, folder.y_train[order])  # every image once, epoch order


def test_train_batches_depend_on_epoch_and_resume(folder):
    x0, _ = collect(data.image_batches(folder, 2, KEY, 0, normalize=False, **SIZES))
    x1, _ = collect(data.image_batches(folder, 2, KEY, 1, normalize=False, **SIZES))
    assert x0.dtype == np.uint8 and not np.array_equal(x0, x1)
    tail, _ = collect(data.image_batches(folder, 2, KEY, 0, normalize=False, start_step=1, **SIZES))
    np.testing.assert_array_equal(tail, x0[2:])
    np.testing.assert_allclose(
        data.normalize_imagenet(x0), collect(data.image_batches(folder, 2, KEY, 0, **SIZES))[0]
    )


def test_eval_batches_center_crop_in_order(folder):
    batches = list(data.image_batches(folder, 3, None, split="test", normalize=False, **SIZES))
    assert [len(y) for _, y in batches] == [3, 1]  # remainder kept
    x, y = collect(batches)
    assert y.tolist() == [0, 0, 1, 1]
    with Image.open(folder.test_files[0]) as img:  # 48x36: shorter side 36 -> 20, width 27
        expected = np.asarray(img.convert("RGB").resize((27, 20), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(x[0], expected[2:18, 6:22])


def test_random_resized_crop_box_valid():
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, w, h = _random_resized_crop_box(50, 30, rng, (0.08, 1.0), (3 / 4, 4 / 3))
        assert 0 < w and 0 < h and left >= 0 and top >= 0 and left + w <= 50 and top + h <= 30


def test_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="(?s)does not exist.*train/<class>"):
        data.imagenet(tmp_path / "nowhere")
    (tmp_path / "train" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "a" / "x.jpg")
    with pytest.raises(FileNotFoundError, match="val"):
        data.imagenet(tmp_path)
    (tmp_path / "val" / "b").mkdir(parents=True)
    with pytest.raises(ValueError, match="absent from train"):
        data.imagenet(tmp_path)


def test_default_eval_resize_keeps_256_over_224(folder):
    path = folder.test_files[0]
    np.testing.assert_array_equal(
        data.decode_image(path, None, image_size=16), data.decode_image(path, None, 16, 18)
    )
    assert data.decode_image(path, None).shape == (224, 224, 3)
