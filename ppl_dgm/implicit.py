"""Evaluation of implicit models (GANs, GMMNs, code models): no likelihood, only samples.

* :func:`mmd_permutation_test`: the unbiased MMD^2 between samples and held-out data
  with a Gaussian kernel sum, and its permutation p-value (Gretton et al. 2012): the
  probability, under "same distribution", of a statistic at least as large.
* :func:`class_coverage`: on labelled image data (digits, MNIST), a classifier fit on the
  training labels assigns each sample a class; a mode-collapsed generator covers few
  classes.  ``effective_classes`` is ``exp(entropy)`` of the class histogram (10 for a
  uniform spread over the 10 digits).
* :func:`evaluate_implicit` does both against a :class:`~ppl_dgm.data.Dataset`'s test
  split, with the training-vs-test MMD^2 as the noise floor a perfect model would reach.
* :func:`save_samples`: a PNG grid of samples (``ppl_dgm.plots.save_grid``).

Parzen-window log-likelihoods are deliberately absent (Theis et al. 2016).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import Dataset
from .errors import DataError
from .kernels import gaussian_kernel, median_distance
from .protocol import sampler

__all__ = ["CoverageResult", "DigitClassifier", "ImplicitEvaluation", "TwoSampleResult",
           "class_coverage", "evaluate_implicit", "mmd_permutation_test", "save_samples"]

EVAL_MULTIPLES = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class TwoSampleResult:
    """Unbiased MMD^2 of two samples and its permutation p-value."""

    mmd2: float
    p_value: float
    sigmas: tuple[float, ...]
    num_permutations: int
    n_x: int
    n_y: int


@dataclass(frozen=True)
class CoverageResult:
    """Predicted-class histogram of samples and how many classes it covers."""

    counts: tuple[int, ...]
    covered: int
    effective_classes: float
    threshold: float
    classifier_accuracy: float | None
    num_samples: int


@dataclass(frozen=True)
class ImplicitEvaluation:
    """MMD to the test set (with the train-vs-test floor) and class coverage."""

    mmd: TwoSampleResult
    reference_mmd2: float
    coverage: CoverageResult | None
    summary: dict


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.detach().reshape(x.shape[0], -1).to(torch.float64)


def default_sigmas(reference: torch.Tensor) -> tuple[float, ...]:
    """Bandwidths ``(0.5, 1, 2) x`` the median pairwise distance of ``reference``."""
    med = float(median_distance(_flat(reference)))
    return tuple(m * med for m in EVAL_MULTIPLES)


@torch.no_grad()
def mmd_permutation_test(x: torch.Tensor, y: torch.Tensor, *, sigmas=None,
                         num_permutations: int = 500, seed: int = 0,
                         chunk: int = 100) -> TwoSampleResult:
    """Unbiased MMD^2 between ``x (n, ...)`` and ``y (m, ...)`` and its permutation p-value.

    The pooled kernel matrix is computed once; each permutation relabels the pooled
    points, and the statistic is recomputed from quadratic forms of the matrix.  The
    p-value is ``(1 + #{perm >= observed}) / (1 + num_permutations)``.
    ``sigmas`` default: :func:`default_sigmas` of ``y`` (the held-out data).
    """
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise DataError(f"a two-sample test needs at least 2 points per sample, got "
                        f"{x.shape[0]} and {y.shape[0]}")
    if x[0].numel() != y[0].numel():
        raise DataError(f"samples have {x[0].numel()} features but the data have "
                        f"{y[0].numel()}")
    if num_permutations < 1:
        raise ValueError(f"num_permutations must be >= 1, got {num_permutations}")
    sig = tuple(float(s) for s in (sigmas if sigmas is not None else default_sigmas(y)))
    pooled = torch.cat([_flat(x), _flat(y).to(x.device)])
    n, m = x.shape[0], y.shape[0]
    k = gaussian_kernel(pooled, pooled, sig)
    k.fill_diagonal_(0.0)

    def stats(a: torch.Tensor) -> torch.Tensor:  # a: (P, N) indicators of the x sample
        b = 1.0 - a
        ka, kb = a @ k, b @ k
        xx, yy, xy = (ka * a).sum(1), (kb * b).sum(1), (ka * b).sum(1)
        return xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2.0 * xy / (n * m)

    labels = torch.zeros(1, n + m, dtype=k.dtype, device=k.device)
    labels[0, :n] = 1.0
    observed = stats(labels)[0]
    g = torch.Generator().manual_seed(seed)
    exceed, done = 0, 0
    while done < num_permutations:
        p = min(chunk, num_permutations - done)
        order = torch.argsort(torch.rand(p, n + m, generator=g), dim=1).to(k.device)
        a = (order < n).to(k.dtype)
        exceed += int((stats(a) >= observed).sum())
        done += p
    return TwoSampleResult(mmd2=float(observed), p_value=(1 + exceed) / (1 + num_permutations),
                           sigmas=sig, num_permutations=num_permutations, n_x=n, n_y=m)


class DigitClassifier:
    """Multinomial logistic regression on flattened images and their labels
    (scikit-learn), used to name the class of generated samples."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, *, max_iter: int = 2000):
        from sklearn.linear_model import LogisticRegression

        if labels is None:
            raise DataError("class coverage needs labelled training data (labels_train)")
        self.num_classes = int(labels.max()) + 1
        self.model = LogisticRegression(max_iter=max_iter)
        self.model.fit(_flat(x).cpu().numpy(), labels.cpu().numpy())

    def predict(self, x: torch.Tensor) -> np.ndarray:
        return self.model.predict(_flat(x).cpu().numpy())

    def accuracy(self, x: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self.predict(x) == labels.cpu().numpy()).mean())

    @classmethod
    def from_dataset(cls, data: Dataset) -> DigitClassifier:
        if data.labels_train is None:
            raise DataError(f"data set {data.name!r} has no labels; class coverage needs "
                            f"labelled data such as digits or mnist")
        return cls(data.train, data.labels_train)


def class_coverage(samples: torch.Tensor, classifier: DigitClassifier, *,
                   threshold: float = 0.01, accuracy: float | None = None) -> CoverageResult:
    """Histogram of the classifier's classes over ``samples``; ``covered`` counts the
    classes holding at least ``threshold`` of the samples."""
    pred = classifier.predict(samples)
    counts = np.bincount(pred, minlength=classifier.num_classes)
    freq = counts / counts.sum()
    nz = freq[freq > 0]
    return CoverageResult(counts=tuple(int(c) for c in counts),
                          covered=int((freq >= threshold).sum()),
                          effective_classes=float(np.exp(-(nz * np.log(nz)).sum())),
                          threshold=threshold, classifier_accuracy=accuracy,
                          num_samples=int(counts.sum()))


def _draw(model, n: int) -> torch.Tensor:
    sample = sampler(model)
    if sample is None:
        raise DataError(f"model {type(model).__name__} has no sample(n) method to draw from")
    with torch.no_grad():
        return sample(n).detach().cpu()


def evaluate_implicit(model, data: Dataset, *, num_samples: int | None = None,
                      coverage_samples: int = 1000, num_permutations: int = 500, seed: int = 0,
                      coverage: bool = True) -> ImplicitEvaluation:
    """MMD two-sample test of ``model.sample`` against ``data.test`` and class coverage.

    :param num_samples: samples for the MMD test (default: the test-set size).
    :param coverage_samples: samples for the class histogram (when the data have labels).
    ``reference_mmd2`` is the same statistic between an equally large random subset of
    the training data and the test data: what a model that draws the data distribution
    itself would score (up to noise).
    """
    test = data.test
    if test.shape[0] < 2:
        raise DataError(f"data set {data.name!r} has no test split to compare samples with")
    n = num_samples or test.shape[0]
    torch.manual_seed(seed)
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        samples = _draw(model, n)
        cov_x = _draw(model, coverage_samples) if coverage else None
    finally:
        if was_training:
            model.train()
    sig = default_sigmas(test)
    result = mmd_permutation_test(samples, test, sigmas=sig, num_permutations=num_permutations,
                                  seed=seed)
    g = torch.Generator().manual_seed(seed)
    sub = data.train[torch.randperm(data.train.shape[0], generator=g)[:n]]
    ref = mmd_permutation_test(sub, test, sigmas=sig, num_permutations=1, seed=seed).mmd2
    cov = None
    if coverage and data.labels_train is not None:
        clf = DigitClassifier.from_dataset(data)
        acc = clf.accuracy(test, data.labels_test) if data.labels_test is not None else None
        cov = class_coverage(cov_x, clf, accuracy=acc)
    summary = {"mmd2_test": result.mmd2, "mmd_p_value": result.p_value,
               "mmd2_train_vs_test": ref}
    if cov is not None:
        summary.update({"classes_covered": cov.covered,
                        "effective_classes": cov.effective_classes,
                        "classifier_test_accuracy": cov.classifier_accuracy})
    return ImplicitEvaluation(mmd=result, reference_mmd2=ref, coverage=cov, summary=summary)


def save_samples(model, path: str | Path, *, n: int = 64, image_shape=None,
                 title: str | None = None, seed: int | None = 0) -> Path:
    """Draw ``n`` samples and save them as a PNG grid."""
    from .plots import save_grid

    if seed is not None:
        torch.manual_seed(seed)
    return save_grid(_draw(model, n), path, image_shape=image_shape, title=title)
