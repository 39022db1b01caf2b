import dataclasses
import warnings

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
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileNotFoundError, match=f"data_dir '{tmp_path}/a_file' is a file, not a"):
        data.imagenet(tmp_path / "a_file")
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


# --------------------------------------------------------------------------------------------
# damaged images: skipped with a warning naming the file, counted, fatal only past the limit
# --------------------------------------------------------------------------------------------


def _image_folder(root, num_train, num_damaged, num_val=2):
    """A one-class folder whose first ``num_damaged`` training JPEGs are cut to half their bytes."""
    rng = np.random.default_rng(1)
    for split, count in (("train", num_train), ("val", num_val)):
        (root / split / "n01").mkdir(parents=True)
        for i in range(count):
            path = root / split / "n01" / f"img_{i}.JPEG"
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
            if split == "train" and i < num_damaged:
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return data.imagenet(root)


def test_truncated_jpeg_is_skipped_with_a_warning_naming_it(tmp_path):
    folder = _image_folder(tmp_path, num_train=4, num_damaged=1)
    damaged = folder.train_files[0]
    with pytest.warns(
        data.CorruptImageWarning,
        match=rf"skipped damaged image '{damaged}'.*1 damaged so far, the run stops past 10",
    ):
        batches = list(data.image_batches(folder, 4, KEY, 0, normalize=False, **SIZES))
    assert list(folder.corrupt_files) == [damaged]
    ((x, y),) = batches
    assert x.shape == (4, 16, 16, 3)  # a training batch keeps its size ...
    order = np.asarray(data.epoch_permutation(4, KEY, 0)).tolist()
    slot = order.index(0)
    copied = next((g for g in range(slot + 1, 4)), 0)  # ... with the next good image's copy
    np.testing.assert_array_equal(x[slot], x[copied])
    assert len({x[i].tobytes() for i in range(4)}) == 3
    with warnings.catch_warnings():  # the same file in a later epoch: no new warning, same count
        warnings.simplefilter("error")
        assert len(list(data.image_batches(folder, 4, KEY, 1, normalize=False, **SIZES))) == 1
    assert len(folder.corrupt_files) == 1


def test_evaluation_drops_a_damaged_image_and_the_pool_agrees(tmp_path):
    folder = _image_folder(tmp_path, num_train=3, num_damaged=1)
    train_view = dataclasses.replace(folder, test_files=folder.train_files, y_test=folder.y_train)
    with pytest.warns(data.CorruptImageWarning, match="img_0.JPEG"):
        ((x, _),) = data.image_batches(train_view, 3, None, split="test", **SIZES)
    assert x.shape == (2, 16, 16, 3)  # dropped, not copied: no image counted twice
    assert list(folder.corrupt_files) == [folder.train_files[0]]  # shared with the view
    pooled = list(data.image_batches(train_view, 3, None, split="test", num_workers=2, **SIZES))
    np.testing.assert_array_equal(pooled[0][0], x)


def test_more_damaged_images_than_the_limit_stop_the_run(tmp_path):
    folder = _image_folder(tmp_path, num_train=12, num_damaged=11)
    assert data.corrupt_limit(folder.num_train + folder.num_test) == 10
    with pytest.warns(data.CorruptImageWarning):
        with pytest.raises(
            data.CorruptImagesError,
            match=r"11 images could not be decoded, more than the 10 tolerated.*img_",
        ):
            list(data.image_batches(folder, 12, KEY, 0, **SIZES))


def test_corrupt_limit_is_a_tenth_of_a_percent_with_a_floor():
    assert data.corrupt_limit(1_331_167) == 1331  # ImageNet-1k train + val
    assert data.corrupt_limit(5) == data.corrupt_limit(10_999) == 10


def test_decode_errors_name_the_file(tmp_path):
    missing = str(tmp_path / "gone.JPEG")
    with pytest.raises(data.CorruptImageError, match=rf"cannot decode '{missing}'"):
        data.decode_image(missing, None, **SIZES)
    text = tmp_path / "text.JPEG"
    text.write_text("not an image")
    with pytest.raises(data.CorruptImageError, match=rf"cannot decode '{text}'.*cannot identify"):
        data.decode_image(str(text), None, **SIZES)


def test_a_training_batch_with_no_good_image_stops_and_names_them(tmp_path):
    folder = _image_folder(tmp_path, num_train=2, num_damaged=2)
    with pytest.warns(data.CorruptImageWarning):
        with pytest.raises(data.CorruptImagesError, match=r"all 2 images .* damaged.*img_0.JPEG"):
            list(data.image_batches(folder, 2, KEY, 0, **SIZES))
