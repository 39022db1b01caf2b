import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nmelab import data

KEY = jax.random.key(0)


def ids(batches):
    return [np.asarray(y) for _, y in batches]


def toy(n=23):
    x = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    return data.Dataset(x, np.arange(n), x[:2], np.arange(2), n, "toy")


def test_same_key_and_epoch_same_batches_other_epoch_other_order():
    ds = toy()
    a = ids(data.epoch_batches(ds, 5, KEY, epoch=3))
    b = ids(data.epoch_batches(ds, 5, KEY, epoch=3))
    c = ids(data.epoch_batches(ds, 5, KEY, epoch=4))
    d = ids(data.epoch_batches(ds, 5, jax.random.key(1), epoch=3))
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not np.array_equal(np.concatenate(a), np.concatenate(c))
    assert not np.array_equal(np.concatenate(a), np.concatenate(d))


def test_every_example_once_per_epoch():
    ds = toy()
    full = np.concatenate(ids(data.epoch_batches(ds, 5, KEY, 0, drop_remainder=False)))
    assert sorted(full.tolist()) == list(range(23))
    dropped = ids(data.epoch_batches(ds, 5, KEY, 0))
    assert len(dropped) == data.num_batches(23, 5) == 4
    assert all(len(b) == 5 for b in dropped)
    flat = np.concatenate(dropped)
    assert len(set(flat.tolist())) == 20
    np.testing.assert_array_equal(flat, full[:20])


def test_order_is_epoch_permutation_and_jittable():
    ds = toy()
    order = np.concatenate(ids(data.epoch_batches(ds, 23, KEY, 2)))
    np.testing.assert_array_equal(order, np.asarray(data.epoch_permutation(23, KEY, 2)))
    in_jit = jax.jit(data.epoch_permutation, static_argnums=0)(23, KEY, jnp.asarray(2))
    np.testing.assert_array_equal(order, np.asarray(in_jit))
    keys = jax.random.split(KEY, 3)
    per_seed = jax.vmap(lambda k: data.epoch_permutation(23, k, 0))(keys)
    assert per_seed.shape == (3, 23)


def test_resume_mid_epoch_reproduces_tail():
    ds = toy()
    full = ids(data.epoch_batches(ds, 4, KEY, 1))
    tail = ids(data.epoch_batches(ds, 4, KEY, 1, start_step=3))
    assert len(tail) == len(full) - 3
    assert all(np.array_equal(p, q) for p, q in zip(full[3:], tail, strict=True))
    with pytest.raises(ValueError, match="start_step"):
        list(data.epoch_batches(ds, 4, KEY, 1, start_step=9))


def test_raw_and_typed_keys_both_work():
    ds = toy()
    raw = ids(data.epoch_batches(ds, 5, jax.random.PRNGKey(0), 0))
    assert len(raw) == 4
    assert data.key_words(jax.random.key(7)) == data.key_words(jax.random.PRNGKey(7))
    with pytest.raises(TypeError, match="key"):
        data.key_words(7)


def test_eval_batches_keep_remainder_in_order():
    ds = toy()
    sizes = [len(y) for _, y in data.eval_batches(ds.x_train, ds.y_train, 10)]
    assert sizes == [10, 10, 3]
    ys = np.concatenate([y for _, y in data.eval_batches(ds.x_train, ds.y_train, 10)])
    np.testing.assert_array_equal(ys, np.arange(23))


def test_random_crop_flip_deterministic_and_a_shifted_crop():
    x = np.random.default_rng(0).standard_normal((6, 8, 8, 3)).astype(np.float32)
    k1, k2 = jax.random.key(1), jax.random.key(2)
    a = np.asarray(data.random_crop_flip(x, k1))
    np.testing.assert_array_equal(a, np.asarray(data.random_crop_flip(x, k1)))
    assert not np.array_equal(a, np.asarray(data.random_crop_flip(x, k2)))
    identity = data.random_crop_flip(x, k1, padding=0, flip=False)
    np.testing.assert_array_equal(np.asarray(identity), x)
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    # each output is one of the 9x9 crops of the padded image, maybe mirrored
    for n in range(len(x)):
        candidates = [padded[n, i : i + 8, j : j + 8] for i in range(9) for j in range(9)]
        candidates += [c[:, ::-1] for c in candidates]
        assert any(np.array_equal(a[n], c) for c in candidates)


def test_augmentation_inside_batches_is_pure_in_key_and_epoch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 8, 8, 3)).astype(np.float32)
    ds = data.Dataset(x, np.arange(12), x[:1], np.arange(1), 12, "img")
    run = lambda epoch: [  # noqa: E731
        np.asarray(xb)
        for xb, _ in data.epoch_batches(ds, 4, KEY, epoch, augment_fn=data.random_crop_flip)
    ]
    a, b, c = run(0), run(0), run(1)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c, strict=True))
