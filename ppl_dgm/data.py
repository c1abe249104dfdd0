"""Data sets: the embedded binarised digits, user arrays, MNIST, and synthetic data.

Every loader returns a :class:`Dataset` with float32 ``train`` and ``test`` tensors of
shape ``(N, D)`` that have been validated (finite, two-dimensional, non-empty).

The embedded default is scikit-learn's 8x8 handwritten digits (1797 images, shipped
inside scikit-learn, so nothing is downloaded): pixel intensities 0..16 are binarised
once with a fixed threshold, ``x = 1 if intensity >= 8``, and split by one fixed random
permutation (``numpy.random.default_rng(0)``) into 1500 training and 297 test images.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

__all__ = ["Dataset", "check_data", "load_array", "load_data", "load_digits", "load_idx",
           "load_mnist", "synthetic"]


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors plus how they were made."""

    name: str
    train: torch.Tensor
    test: torch.Tensor
    binary: bool
    image_shape: tuple[int, ...] | None = None
    labels_train: torch.Tensor | None = field(default=None, repr=False)
    labels_test: torch.Tensor | None = field(default=None, repr=False)
    description: str = ""

    @property
    def x_dim(self) -> int:
        return int(self.train.shape[1])

    @property
    def model_options(self) -> dict:
        """Constructor options the data gives a model besides ``x_dim`` (a text data
        set's ``vocab_size``); passed where the model takes them."""
        return {}


def check_data(x, *, name: str = "data") -> torch.Tensor:
    """Validate an array of data points and return it as a float32 tensor ``(N, D)``."""
    if isinstance(x, np.ndarray):
        if np.issubdtype(x.dtype, np.complexfloating):
            raise DataError(f"{name} has dtype {x.dtype}; expected real numbers")
        if not np.issubdtype(x.dtype, np.number) and x.dtype != np.bool_:
            raise DataError(f"{name} has dtype {x.dtype}; expected a numeric array")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.is_complex():
        raise DataError(f"{name} has dtype {x.dtype}; expected real numbers")
    if x.dim() != 2:
        raise DataError(f"{name} must have shape (num_points, num_features), got shape "
                        f"{tuple(x.shape)}; flatten images with x.reshape(len(x), -1)")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{name} is empty (shape {tuple(x.shape)})")
    x = x.to(torch.float32)
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        rows = torch.nonzero(bad.any(1)).flatten()
        kind = "NaN" if bool(torch.isnan(x).any()) else "infinite"
        raise DataError(f"{name} contains {kind} values in {len(rows)} rows (first rows: "
                        f"{rows[:5].tolist()}); remove or impute them before training")
    return x


def _is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def load_digits(*, threshold: int = 8, num_test: int = 297, seed: int = 0) -> Dataset:
    """Binarised scikit-learn digits (8x8): fixed threshold, fixed random split."""
    from sklearn.datasets import load_digits as _sk_digits

    raw = _sk_digits()
    x = (raw.data >= threshold).astype(np.float32)
    y = raw.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    test_idx, train_idx = order[:num_test], order[num_test:]
    return Dataset(
        name="digits", train=torch.from_numpy(x[train_idx]), test=torch.from_numpy(x[test_idx]),
        binary=True, image_shape=(8, 8),
        labels_train=torch.from_numpy(y[train_idx]), labels_test=torch.from_numpy(y[test_idx]),
        description=f"scikit-learn digits, binarised at intensity >= {threshold} of 16, "
                    f"{len(train_idx)} train / {len(test_idx)} test (permutation seed {seed})")


def load_array(path: str | Path, *, test_fraction: float = 0.15, seed: int = 0) -> Dataset:
    """Data from a ``.npy`` file (split at random) or an ``.npz`` file.

    An ``.npz`` with arrays ``train`` and ``test`` is used as given; one with a single
    array (or one named ``x``) is split like a ``.npy`` file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist")
    if path.suffix not in (".npy", ".npz"):
        raise DataError(f"data file {str(path)!r} must end in .npy or .npz")
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} is not a regular file")
    try:
        if path.suffix == ".npy":
            arrays = {"x": np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
    except Exception as e:  # zipfile, format and OS errors of a corrupt file
        raise DataError(f"data file {str(path)!r} cannot be read as {path.suffix} "
                        f"({type(e).__name__}: {str(e)[:120]})") from None
    if "test" in arrays and "train" not in arrays:
        raise DataError(f"{path.name} holds a 'test' array but no 'train' array; add the "
                        f"training points as 'train'")
    if "train" in arrays:
        train = check_data(arrays["train"], name=f"{path.name}['train']")
        test = check_data(arrays["test"], name=f"{path.name}['test']") if "test" in arrays \
            else train[:0]
        if test.shape[0] and test.shape[1] != train.shape[1]:
            raise DataError(f"{path.name}: train has {train.shape[1]} features but test has "
                            f"{test.shape[1]}")
    else:
        if len(arrays) != 1 and "x" not in arrays:
            raise DataError(f"{path.name} holds arrays {sorted(arrays)}; name them 'train' and "
                            f"'test', or store a single array")
        x = check_data(arrays.get("x", next(iter(arrays.values()))), name=path.name)
        order = torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))
        n_test = int(round(test_fraction * len(x)))
        test, train = x[order[:n_test]], x[order[n_test:]]
    return Dataset(name=path.stem, train=train, test=test,
                   binary=_is_binary(train) and _is_binary(test),
                   description=f"arrays from {path.name}")


def load_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"cannot read IDX file {str(path)!r}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path.name} is not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise DataError(f"{path.name}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataError(f"{path.name} is truncated: header says {dims}, found {arr.size} values")
    return arr.reshape(dims)


_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find(root: Path, stem: str) -> Path | None:
    for cand in (root / stem, root / f"{stem}.gz", root / "MNIST" / "raw" / stem,
                 root / "MNIST" / "raw" / f"{stem}.gz"):
        if cand.exists():
            return cand
    return None


def load_mnist(root: str | Path, *, binarize: str = "threshold", seed: int = 0) -> Dataset:
    """MNIST from the IDX files under ``root`` (nothing is downloaded).

    Looks for the four standard files in ``root`` or ``root/MNIST/raw`` (torchvision's
    layout); when they are absent and torchvision is installed, asks
    ``torchvision.datasets.MNIST(root, download=False)``.  ``binarize``:
    ``"threshold"`` (fixed, pixel >= 128) or ``"sample"`` (one fixed Bernoulli draw
    with the given seed, the "stochastic binarisation" of Salakhutdinov and Murray).
    """
    root = Path(root)
    if binarize not in ("threshold", "sample"):
        raise DataError(f"binarize={binarize!r}; choose 'threshold' or 'sample'")
    parts = {}
    for split, (img, lab) in _MNIST_FILES.items():
        pi, pl = _find(root, img), _find(root, lab)
        if pi is None:
            parts = {}
            break
        parts[split] = (load_idx(pi), load_idx(pl) if pl else None)
    if not parts:
        parts = _mnist_torchvision(root)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for split, (images, labels) in parts.items():
        x = torch.from_numpy(np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0)
        x = (x >= 0.5).float() if binarize == "threshold" else torch.bernoulli(x, generator=gen)
        y = torch.from_numpy(np.asarray(labels, dtype=np.int64)) if labels is not None else None
        out[split] = (x, y)
    side = int(round(out["train"][0].shape[1] ** 0.5))
    return Dataset(name="mnist", train=out["train"][0], test=out["test"][0], binary=True,
                   image_shape=(side, side) if side * side == out["train"][0].shape[1] else None,
                   labels_train=out["train"][1], labels_test=out["test"][1],
                   description=f"MNIST from {root}, binarised by {binarize}")


def _mnist_torchvision(root: Path):
    try:
        from torchvision.datasets import MNIST
    except ImportError as e:
        raise DataError(
            f"no MNIST IDX files under {str(root)!r} (expected {_MNIST_FILES['train'][0]} "
            f"etc., optionally .gz) and torchvision is not installed; put the four files "
            f"there or install ppl-dgm[mnist]") from e
    try:
        tr, te = MNIST(str(root), train=True, download=False), MNIST(str(root), train=False,
                                                                     download=False)
    except RuntimeError as e:
        raise DataError(f"torchvision found no MNIST under {str(root)!r}: {e}") from e
    return {"train": (tr.data.numpy(), tr.targets.numpy()),
            "test": (te.data.numpy(), te.targets.numpy())}


@torch.no_grad()
def synthetic(model, *, num_train: int = 1000, num_test: int = 200, seed: int = 0,
              site: str = "x") -> Dataset:
    """Data drawn from any model's prior predictive (its ``site`` with ``x=None``)."""
    from pyro import poutine

    torch.manual_seed(seed)
    tr = poutine.trace(model).get_trace(None, batch_size=num_train + num_test)
    if site not in tr.nodes:
        raise DataError(f"model {type(model).__name__} has no sample site {site!r} to draw "
                        f"synthetic data from")
    x = check_data(tr.nodes[site]["value"].detach().reshape(num_train + num_test, -1).cpu(),
                   name="synthetic data")
    return Dataset(name=f"synthetic-{type(model).__name__}", train=x[:num_train],
                   test=x[num_train:], binary=_is_binary(x),
                   description=f"{num_train}+{num_test} draws from {type(model).__name__}'s "
                               f"prior predictive (seed {seed})")


def load_data(spec: str, *, root: str | None = None, seed: int = 0) -> Dataset:
    """Resolve a command-line data spec: ``digits``, ``mnist`` (with ``root``), a
    ``.npy``/``.npz`` file, ``text`` (the embedded sentences) or ``text:FILE[,opts]``
    (:func:`ppl_dgm.text.load_text_spec`)."""
    if spec == "digits":
        return load_digits()
    if spec == "mnist":
        if root is None:
            raise DataError("--data mnist needs --data-root DIR holding the MNIST IDX files")
        return load_mnist(root)
    if spec.endswith((".npy", ".npz")):
        return load_array(spec, seed=seed)
    if spec == "text" or spec.startswith("text:"):  # sentences: see ppl_dgm.text
        from .text import load_text_spec
        return load_text_spec(spec, seed=seed)
    raise DataError(f"unknown data {spec!r}; use 'digits', 'mnist' (with --data-root), a "
                    f".npy/.npz file, 'text' or 'text:FILE'")
