"""Evaluation of implicit models: MMD permutation test, class coverage, grids, CLI."""

import pytest
import torch

from ppl_dgm.cli import main
from ppl_dgm.data import load_digits
from ppl_dgm.errors import DataError
from ppl_dgm.implicit import (
    DigitClassifier,
    class_coverage,
    evaluate_implicit,
    mmd_permutation_test,
    save_samples,
)
from ppl_dgm.kernels import mmd2


@pytest.fixture(scope="module")
def digits():
    return load_digits()


class Replay(torch.nn.Module):
    """A 'model' whose samples are rows of a fixed pool (data, or one repeated image)."""

    def __init__(self, pool):
        super().__init__()
        self.pool = pool

    def sample(self, n, mean=True):
        return self.pool[torch.randint(0, self.pool.shape[0], (n,))]


def test_permutation_statistic_is_the_unbiased_mmd():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 2, generator=g), torch.randn(40, 2, generator=g) + 0.5
    res = mmd_permutation_test(x, y, sigmas=(1.0,), num_permutations=50)
    assert res.mmd2 == pytest.approx(float(mmd2(x.double(), y.double(), (1.0,), unbiased=True)),
                                     rel=1e-9)
    assert (res.n_x, res.n_y, res.num_permutations) == (30, 40, 50)


def test_permutation_test_size_and_power():
    """Under the null (both samples N(0, I)), p-values are uniform: out of 100 tests at
    level 0.1, the rejections are within 4 binomial sd of 10.  A shift of 1 sd in
    one coordinate is detected (p at its minimum 1/201)."""
    g = torch.Generator().manual_seed(0)
    rejections = 0
    for i in range(100):
        x, y = torch.randn(40, 2, generator=g), torch.randn(40, 2, generator=g)
        rejections += mmd_permutation_test(x, y, num_permutations=100, seed=i).p_value < 0.1
    assert abs(rejections - 10) <= 4 * 3.0
    x = torch.randn(100, 2, generator=g)
    y = torch.randn(100, 2, generator=g) + torch.tensor([1.0, 0.0])
    assert mmd_permutation_test(x, y, num_permutations=200).p_value == pytest.approx(1 / 201)


def test_permutation_test_bad_input():
    with pytest.raises(DataError, match="at least 2"):
        mmd_permutation_test(torch.zeros(1, 2), torch.zeros(5, 2))
    with pytest.raises(DataError, match="features"):
        mmd_permutation_test(torch.zeros(3, 2), torch.zeros(5, 3))


def test_class_coverage(digits):
    clf = DigitClassifier.from_dataset(digits)
    acc = clf.accuracy(digits.test, digits.labels_test)
    assert acc > 0.85
    full = class_coverage(digits.test, clf, accuracy=acc)
    assert full.covered == 10 and full.effective_classes > 9.0 and full.num_samples == 297
    zeros = digits.train[digits.labels_train == 0][:1].repeat(50, 1)
    one = class_coverage(zeros, clf)
    assert one.covered == 1 and one.effective_classes == pytest.approx(1.0)
    assert one.counts[int(clf.predict(zeros[:1])[0])] == 50


def test_evaluate_implicit_separates_data_from_collapse(digits):
    good = evaluate_implicit(Replay(digits.train), digits, num_permutations=200)
    collapsed = evaluate_implicit(Replay(digits.train[:1]), digits, num_permutations=200)
    assert good.mmd.p_value > 0.01 and good.coverage.covered == 10
    assert collapsed.mmd.p_value < 0.01 and collapsed.coverage.covered == 1
    assert collapsed.mmd.mmd2 > 10 * max(good.reference_mmd2, good.mmd.mmd2)
    assert set(good.summary) >= {"mmd2_test", "mmd_p_value", "mmd2_train_vs_test",
                                 "classes_covered", "effective_classes"}


def test_save_samples(tmp_path, digits):
    path = save_samples(Replay(digits.train), tmp_path / "grid.png", n=16, image_shape=(8, 8))
    assert path.exists() and path.stat().st_size > 0


@pytest.mark.parametrize("model,estimator,extra", [
    ("generator", "nsgan", []),
    pytest.param("generator", "mmd", [], marks=pytest.mark.slow),
    pytest.param("generator", "iwgan", ["--particles", "2"], marks=pytest.mark.slow),
    pytest.param("generator", "wgan-gp", [], marks=pytest.mark.slow),
    pytest.param("dcgan-generator", "gan", ["--model-opt", "channels=8",
                                            "--guide-opt", "channels=8"],
                 marks=pytest.mark.slow),
    pytest.param("code", "pm", ["--model-opt", "code_dim=6"], marks=pytest.mark.slow),
], ids=["nsgan", "mmd", "iwgan", "wgan-gp", "dcgan", "pm"])
def test_cli_train_reports_sample_metrics_and_sample_draws_grids(tmp_path, capsys, model,
                                                                 estimator, extra):
    run = str(tmp_path / "run")
    assert main(["train", "--model", model, "--estimator", estimator, "--steps", "20",
                 "--log-every", "10", "--batch-size", "50", "--run-dir", run,
                 "--no-progress", *extra]) == 0
    out = capsys.readouterr().out
    assert "test MMD^2" in out and "class coverage" in out and "log-likelihood" not in out
    assert main(["sample", run, "--n", "16"]) == 0
    assert (tmp_path / "run" / "samples.png").exists()
