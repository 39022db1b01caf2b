import os
import pickle

import numpy as np
import pytest

from nmelab import data

TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def records(seed, n=2):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    return pixels, labels


def write_bin(root, n=2):
    folder = root / "cifar-10-batches-bin"
    folder.mkdir()
    for seed, name in enumerate([*TRAIN, "test_batch"]):
        pixels, labels = records(seed, n)
        np.concatenate([labels[:, None], pixels], axis=1).tofile(folder / f"{name}.bin")
    return folder


def write_py(root, protocol, n=2):
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    for seed, name in enumerate([*TRAIN, "test_batch"]):
        pixels, labels = records(seed, n)
        batch = {
            b"batch_label": b"fixture",
            b"labels": [int(v) for v in labels],
            b"data": pixels,
            b"filenames": [b"img_%d.png" % i for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=protocol)
    return folder


def test_binary_version_layout_and_values(tmp_path):
    write_bin(tmp_path)
    ds = data.cifar10(tmp_path, normalize=False)
    assert ds.x_train.shape == (10, 32, 32, 3) and ds.x_test.shape == (2, 32, 32, 3)
    assert ds.x_train.dtype == np.uint8 and ds.num_classes == 10
    pixels, labels = records(0)
    np.testing.assert_array_equal(ds.y_train[:2], labels)
    # record layout is channel-major: byte 1 + c*1024 + h*32 + w holds pixel (h, w, c)
    assert ds.x_train[1, 5, 7, 2] == pixels[1, 2 * 1024 + 5 * 32 + 7]
    test_pixels, _ = records(5)
    np.testing.assert_array_equal(ds.x_test[0].transpose(2, 0, 1).ravel(), test_pixels[0])


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_python_version_matches_binary(tmp_path, protocol):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_bin(tmp_path / "a")
    write_py(tmp_path / "b", protocol)
    from_bin = data.cifar10(tmp_path / "a")
    from_py = data.cifar10(tmp_path / "b" / "cifar-10-batches-py")  # the folder itself works too
    assert from_py.x_train.dtype == np.float32
    np.testing.assert_array_equal(from_bin.x_train, from_py.x_train)
    np.testing.assert_array_equal(from_bin.y_test, from_py.y_test)


def test_normalisation():
    x = np.full((1, 2, 2, 3), 255, np.uint8)
    expected = (1.0 - data.CIFAR10_MEAN) / data.CIFAR10_STD
    np.testing.assert_allclose(data.normalize_cifar10(x)[0, 0, 0], expected, rtol=1e-6)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
    folder = write_py(tmp_path, protocol=2)
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": _Exploit(marker), b"labels": []}, f, protocol=2)
    with pytest.raises(ValueError, match=r"refus.*(posix|os)\.system"):
        data.cifar10(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        (eval, ("1 + 1",)),
        (np.load, ("/nonexistent.npy",)),
        (getattr, (np.ndarray, "tofile")),  # gadget through an allowed class
    ],
    ids=["builtins.eval", "numpy.load", "getattr"],
)
def test_restricted_unpickler_refuses_other_globals(tmp_path, payload):
    class Evil:
        def __reduce__(self):
            return payload

    path = tmp_path / "evil"
    path.write_bytes(pickle.dumps([Evil()], protocol=4))
    with pytest.raises(data.RefusedPickleError, match="refusing"):
        data.load_restricted_pickle(path)


def test_missing_and_malformed_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="(?s)does not exist.*cifar-10-batches-bin"):
        data.cifar10(tmp_path / "nowhere")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileNotFoundError, match=f"data_dir '{tmp_path}/a_file' is a file, not a"):
        data.cifar10(tmp_path / "a_file")
    (tmp_path / "a_file").unlink()
    with pytest.raises(FileNotFoundError, match="(?s)no CIFAR-10 batches.*cifar-10-batches-py"):
        data.cifar10(tmp_path)
    folder = write_bin(tmp_path)
    (folder / "data_batch_4.bin").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_4.bin"):
        data.cifar10(tmp_path)
    (folder / "data_batch_4.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="3073-byte record"):
        data.cifar10(tmp_path)


def test_malformed_python_batch(tmp_path):
    folder = write_py(tmp_path, protocol=4)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, f, protocol=4)
    with pytest.raises(ValueError, match=r"uint8 \(N, 3072\)"):
        data.cifar10(tmp_path)
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a readable pickle"):
        data.cifar10(tmp_path)


def _truncate(path):
    path.write_bytes(path.read_bytes()[:1000])


def _bad_label(path):
    raw = bytearray(path.read_bytes())
    raw[0] = 11
    path.write_bytes(bytes(raw))


def _pickle_of(value):
    def write(path):
        with open(path, "wb") as f:
            pickle.dump(value, f, protocol=4)

    return write


@pytest.mark.parametrize(
    ("version", "damage"),
    [
        ("bin", _truncate),
        ("bin", _bad_label),
        ("bin", os.remove),
        ("py", _truncate),
        ("py", _pickle_of([1, 2])),
        ("py", _pickle_of({b"data": np.zeros((2, 3072), np.uint8)})),
        ("py", os.remove),
    ],
)
def test_every_damaged_batch_is_named(tmp_path, version, damage):
    folder = write_bin(tmp_path) if version == "bin" else write_py(tmp_path, protocol=4)
    path = folder / ("data_batch_3.bin" if version == "bin" else "data_batch_3")
    damage(path)
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        data.cifar10(tmp_path)
    assert repr(str(path)) in str(info.value)
