import gzip
import struct

import numpy as np
import pytest
import torch
from ppl_dgm.models import VAE

from ppl_dgm.data import load_array, load_data, load_digits, load_idx, load_mnist, synthetic
from ppl_dgm.errors import DataError


def test_digits_fixed_binarisation_and_split():
    a, b = load_digits(), load_digits()
    assert a.train.shape == (1500, 64) and a.test.shape == (297, 64)
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert set(a.train.unique().tolist()) == {0.0, 1.0}
    assert a.labels_train.shape == (1500,) and a.image_shape == (8, 8)
    # a factorised Bernoulli fitted on train: ~25 nats per test digit (REFERENCES.md: 25.2)
    p = a.train.mean(0).clamp(1e-3, 1 - 1e-3)
    nll = -(a.test * p.log() + (1 - a.test) * (1 - p).log()).sum(1).mean()
    assert 24.5 < float(nll) < 26.0


def test_npy_and_npz(tmp_path):
    x = (np.random.default_rng(0).random((50, 6)) > 0.5).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    d = load_array(tmp_path / "a.npy", test_fraction=0.2)
    assert d.train.shape == (40, 6) and d.test.shape == (10, 6) and d.binary
    np.savez(tmp_path / "b.npz", train=x[:30], test=x[30:] * 0.3)
    d = load_data(str(tmp_path / "b.npz"))
    assert d.train.shape == (30, 6) and not d.binary


def test_array_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_array(tmp_path / "none.npy")
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan]]))
    with pytest.raises(DataError, match="NaN"):
        load_array(tmp_path / "nan.npy")
    np.savez(tmp_path / "bad.npz", train=np.zeros((4, 3)), test=np.zeros((4, 2)))
    with pytest.raises(DataError, match="3 features.*2"):
        load_array(tmp_path / "bad.npz")
    with pytest.raises(DataError, match="unknown data"):
        load_data("cifar")


def _write_idx(path, array, gz=False):
    code = {np.uint8: 0x08}[array.dtype.type]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def test_mnist_from_small_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=20, dtype=np.uint8)
    _write_idx(raw / "train-images-idx3-ubyte.gz", imgs, gz=True)
    _write_idx(raw / "train-labels-idx1-ubyte.gz", labels, gz=True)
    _write_idx(raw / "t10k-images-idx3-ubyte", imgs[:5])
    _write_idx(raw / "t10k-labels-idx1-ubyte", labels[:5])
    d = load_mnist(tmp_path)
    assert d.train.shape == (20, 784) and d.test.shape == (5, 784)
    assert torch.equal(d.train[3], torch.from_numpy(imgs[3].reshape(-1) >= 128).float())
    assert d.labels_train.tolist() == labels.tolist()
    s = load_mnist(tmp_path, binarize="sample", seed=1)
    assert set(s.train.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(s.train, load_mnist(tmp_path, binarize="sample", seed=1).train)


def test_idx_truncated_and_bad_magic(tmp_path):
    imgs = np.zeros((4, 2, 2), dtype=np.uint8)
    _write_idx(tmp_path / "f", imgs)
    data = (tmp_path / "f").read_bytes()
    (tmp_path / "f").write_bytes(data[:-3])
    with pytest.raises(DataError, match="truncated"):
        load_idx(tmp_path / "f")
    (tmp_path / "g").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="magic"):
        load_idx(tmp_path / "g")


def test_mnist_missing_files_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="IDX"):
        load_mnist(tmp_path)


def test_synthetic_from_prior_predictive():
    torch.manual_seed(0)
    model = VAE(16, 2, hidden=(8,))
    d = synthetic(model, num_train=30, num_test=10, seed=3)
    assert d.train.shape == (30, 16) and d.binary
    assert torch.equal(d.train, synthetic(model, num_train=30, num_test=10, seed=3).train)
