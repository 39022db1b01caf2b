import random
import socket
import urllib.request

import numpy as np
import pytest

from nmelab import data


def test_digits_shapes_split_and_determinism():
    ds = data.digits()
    assert ds.x_train.shape == (1437, 64) and ds.x_test.shape == (360, 64)
    assert ds.y_train.shape == (1437,) and ds.y_test.shape == (360,)
    assert ds.x_train.dtype == np.float32 and np.issubdtype(ds.y_train.dtype, np.integer)
    assert ds.num_classes == 10 and ds.name == "digits" and ds.input_shape == (64,)
    again = data.digits.__wrapped__()  # bypass the cache
    np.testing.assert_array_equal(ds.x_train, again.x_train)
    np.testing.assert_array_equal(ds.y_test, again.y_test)
    # standardised with training statistics; constant pixels stay at 0
    np.testing.assert_allclose(ds.x_train.mean(0), 0, atol=1e-5)
    assert set(np.unique(ds.y_train)) == set(range(10))
    other = data.digits.__wrapped__(seed=1)
    assert not np.array_equal(other.y_test, ds.y_test)


def test_dataset_arrays_are_read_only():
    ds = data.digits()
    with pytest.raises(ValueError, match="read-only"):
        ds.x_train[0, 0] = 1.0


def test_mnist1d_generates_without_network_or_files(monkeypatch, tmp_path):
    attempts = []

    def refuse(*args, **kwargs):  # recorded too: mnist1d's own loader swallows exceptions
        attempts.append(args)
        raise AssertionError("network access attempted")

    import requests

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(requests, "get", refuse)
    monkeypatch.setattr(requests.Session, "request", refuse)
    monkeypatch.chdir(tmp_path)
    np_state, py_state = np.random.get_state(), random.getstate()

    data.mnist1d.cache_clear()
    ds = data.mnist1d()  # fills the cache for the other tests

    assert attempts == []
    assert list(tmp_path.iterdir()) == []  # nothing pickled to the working directory
    assert random.getstate() == py_state  # the generator's global seeding is undone
    after = np.random.get_state()
    assert after[1].tolist() == np_state[1].tolist() and after[2] == np_state[2]
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)


def test_mnist1d_shapes_dtypes_and_cache():
    ds = data.mnist1d()
    assert ds.y_train.shape == (4000,) and ds.y_test.shape == (1000,)
    assert ds.x_train.dtype == np.float32 and ds.num_classes == 10
    assert set(np.unique(ds.y_train)) == set(range(10))
    assert data.mnist1d() is ds


def test_mnist1d_overrides_and_determinism():
    a = data.mnist1d.__wrapped__(num_train=120, num_test=75)
    b = data.mnist1d.__wrapped__(num_train=120, num_test=75)
    assert a.x_train.shape == (120, 40) and a.x_test.shape == (75, 40)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    c = data.mnist1d.__wrapped__(num_train=120, num_test=75, seed=0)
    assert not np.array_equal(a.x_train, c.x_train)


def test_synthetic_any_shape():
    ds = data.synthetic((4, 4, 2), num_classes=3, num_train=20, num_test=5, seed=1)
    assert ds.x_train.shape == (20, 4, 4, 2) and ds.x_test.shape == (5, 4, 4, 2)
    assert ds.y_train.max() < 3 and ds.x_train.dtype == np.float32
    again = data.synthetic((4, 4, 2), num_classes=3, num_train=20, num_test=5, seed=1)
    np.testing.assert_array_equal(ds.x_train, again.x_train)
    with pytest.raises(ValueError, match="num_classes"):
        data.synthetic((3,), num_classes=1)


def test_registry():
    assert data.get("synthetic", shape=(3,), num_train=4, num_test=2).x_train.shape == (4, 3)
    with pytest.raises(ValueError, match="choices: digits, mnist1d"):
        data.get("mnist")
    assert set(data.names()) == {"digits", "mnist1d", "synthetic", "cifar10", "imagenet"}


def test_dataset_validation():
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="x_train, y_train"):
        data.Dataset(x, np.zeros(2, np.int32), x, np.zeros(3, np.int32), 2, "bad")
    with pytest.raises(TypeError, match="integer labels"):
        data.Dataset(x, np.zeros(3), x, np.zeros(3, np.int32), 2, "bad")
