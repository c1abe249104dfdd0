"""The ArviZ adapter: sign convention of psislw, ESS/R-hat, data round trips.

These tests import only numpy, xarray and ``ppl_dgm._arviz``, so they also run on
Python >= 3.12 with arviz >= 1.0 (``pytest --noconftest tests/test_arviz_adapter.py``).
"""

import numpy as np
import pytest
import xarray as xr

from ppl_dgm import _arviz


def _pareto_log_weights(k: float, shape, seed: int) -> np.ndarray:
    # w = U^(-k) has a Pareto tail with shape k (tail index 1/k): P(w > t) = t^(-1/k)
    u = np.random.default_rng(seed).uniform(size=shape)
    return -k * np.log(u)


def test_psislw_takes_log_weights_not_their_negation():
    lw = _pareto_log_weights(0.9, (8, 4000), seed=1)
    _, khat = _arviz.psislw(lw)
    # k-hat sd is about 0.15 at 1000 draws and shrinks like 1/sqrt(S); 8 replicates
    # averaged at S=4000 have sd below 0.05, so 0.15 is 3 sd
    assert abs(khat.mean() - 0.9) < 0.15, khat
    assert khat.min() > 0.7
    # the negation (what arviz >= 1 expects internally) has bounded weights: k < 0.5
    _, k_neg = _arviz.psislw(-lw)
    assert k_neg.max() < 0.5, k_neg


def test_psislw_output_is_normalised_float64():
    lw = np.random.default_rng(0).normal(size=(3, 500)).astype(np.float32)
    smoothed, khat = _arviz.psislw(lw)
    assert smoothed.dtype == np.float64 and khat.dtype == np.float64
    assert smoothed.shape == (3, 500) and khat.shape == (3,)
    np.testing.assert_allclose(np.exp(smoothed).sum(-1), 1.0, rtol=1e-10)
    # shifting log weights by a constant changes nothing (up to float32 rounding of lw)
    shifted = lw.astype(np.float64) + 100.0
    np.testing.assert_allclose(_arviz.psislw(shifted)[1], khat, atol=1e-4)


def test_psislw_equal_weights_give_minus_inf():
    lw = np.zeros((2, 1000))
    lw[1] = np.random.default_rng(0).normal(size=1000)
    smoothed, khat = _arviz.psislw(lw)
    assert khat[0] == -np.inf and np.isfinite(khat[1])
    np.testing.assert_allclose(np.exp(smoothed[0]), 1e-3)


def test_psislw_needs_two_draws():
    with pytest.raises(ValueError, match="at least 2 draws"):
        _arviz.psislw(np.zeros((3, 1)))


def test_ess_and_rhat_of_chains():
    rng = np.random.default_rng(0)
    iid = rng.normal(size=(4, 500, 3))
    ess = _arviz.ess(iid)
    assert ess.shape == (3,)
    # 2000 independent draws: the bulk-ESS estimate is within 25% of 2000
    assert np.all(np.abs(ess / 2000 - 1) < 0.25), ess
    assert np.all(_arviz.rhat(iid) < 1.01)
    stuck = iid + np.array([0.0, 0.0, 0.0, 3.0])[:, None, None]  # one chain elsewhere
    assert np.all(_arviz.rhat(stuck) > 1.1)


def test_inference_data_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    post = xr.Dataset({"z": (("chain", "draw", "point", "z_dim"), rng.normal(size=(1, 50, 2, 3)))},
                      coords={"point": [4, 9], "z_dim": [0, 1, 2]})
    summ = xr.Dataset({"khat": ("point", np.array([0.1, -np.inf, 0.8]))},
                      coords={"point": [0, 1, 2]})
    idata = _arviz.inference_data({"posterior": post, "point_diagnostics": summ},
                                  attrs={"num_draws": 50})
    assert _arviz.group_names(idata) == ["posterior", "point_diagnostics"]
    path = _arviz.to_netcdf(idata, tmp_path / "sub" / "d.nc")
    back = _arviz.from_netcdf(path)
    np.testing.assert_array_equal(_arviz.get_group(back, "posterior")["z"].values,
                                  post["z"].values)
    np.testing.assert_array_equal(_arviz.get_group(back, "posterior")["point"].values, [4, 9])
    np.testing.assert_array_equal(_arviz.get_group(back, "point_diagnostics")["khat"].values,
                                  summ["khat"].values)
    # the file is closed after reading: it can be written again
    _arviz.to_netcdf(back, path)
    with pytest.raises(KeyError, match="no group 'nope'"):
        _arviz.get_group(back, "nope")


def test_psislw_flat_tail_of_discrete_weights():
    # a discrete latent: log weights take 3 values, the largest on 30% of the draws
    rng = np.random.default_rng(0)
    lw = rng.choice([-2.0, -1.0, 0.0], p=[0.3, 0.4, 0.3], size=(2, 1000))
    lw[1, :5] = 3.0  # five rare large weights above the common maximum
    smoothed, khat = _arviz.psislw(lw)
    assert khat[0] == -np.inf  # neither inf (0.23) nor an error (>= 1.0)
    np.testing.assert_allclose(np.exp(smoothed).sum(-1), 1.0)
    np.testing.assert_allclose(smoothed[0], lw[0] - np.log(np.exp(lw[0]).sum()))
    # not hidden by the flat-tail rule (a GPD fit to atoms: 0.23 and 1.x disagree, the
    # latter gives nan, which ppl_dgm.diagnostics flags for a recheck)
    assert not khat[1] == -np.inf
