"""A validity matrix in the style of Pyro's tests/infer/test_valid_models.py, written for
this project: every language feature (tests/pyro_programs.py, programs written the
ordinary Pyro way) x every registered estimator, through ``pyro.infer.SVI`` and through
``ppl_dgm.train.fit``.  Each pair trains (finite losses) or is refused before any
gradient with a message that names a site or a plate; nothing else may happen.  Pairs
that would otherwise train silently wrong (a discrete latent under a reparameterised-only
estimator, an enumeration-marked site) must be refused."""

from __future__ import annotations

import math
import re
import warnings

import pyro
import pytest
from pyro_programs import PROGRAMS

from ppl_dgm import registry
from ppl_dgm.errors import DataError, IncompatibleEstimatorError, SiteMismatchError
from ppl_dgm.train import fit

REFUSALS = (IncompatibleEstimatorError, DataError, SiteMismatchError)
NOT_REPARAMETERISED = {"discrete latent", "non-vectorisable guide", "enumeration mark",
                       "non-reparameterised continuous"}
OUTCOMES: dict[tuple[str, str, str], str] = {}


def _estimator(name):
    return registry.build_estimator(name)


def _names_a_site_or_plate(message: str) -> bool:
    return bool(re.search(r"'[^']+'", message)) or "plate" in message


def _run(program: str, estimator: str, path: str) -> str:
    model, guide, data, _ = PROGRAMS[program]
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    est = _estimator(estimator)
    args = () if data is None else (data,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if path == "svi":
                svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), est)
                losses = [svi.step(*args) for _ in range(2)]
            else:
                # the whole data set per step: the subsampling program subsamples itself
                kw = {"data_arg": None} if data is None else {"batch_size": len(data)}
                result = fit(model, guide, est, data, steps=2, device="cpu", log_every=1,
                             **kw)
                losses = [row["loss"] for row in result.history]
        except REFUSALS as e:
            assert _names_a_site_or_plate(str(e)), f"refusal names no site or plate: {e}"
            expected = PROGRAMS[program][3]
            cls = registry.ESTIMATORS[estimator]
            if cls.needs_likelihood and not cls.handles_energy_sites:   # else: refused
                assert expected is None or expected in str(e), e       # for its own reason
            return "refused"
    assert all(math.isfinite(v) for v in losses), losses
    return "trained"


# Refusals that are the estimator's design, not the program's fault: AAVAE draws the
# model's own samples as model(None, batch_size=n); wake-sleep gives the guide dreamed
# data in place of the data argument, which needs each observed site to take its value
# from an argument (not a slice of one, not a masked or missing one) and a guide without
# auxiliary variables.
MAY_REFUSE = {("aavae", p) for p in PROGRAMS} | {
    ("ws", p) for p in ("no data", "obs_mask", "sequential plate", "changing site names",
                        "subsampled plate", "auxiliary guide site")}


def _expected(program: str, estimator: str) -> str:
    """'refused' (must be), 'trained' (must be), or 'either'."""
    cls = registry.ESTIMATORS[estimator]
    if PROGRAMS[program][3] is not None or not cls.needs_likelihood:
        return "refused"
    if getattr(cls, "handles_energy_sites", False):   # CD-type: energy-based sites only
        return "refused"
    if program in NOT_REPARAMETERISED and cls.needs_reparam:
        return "refused"
    return "either" if (estimator, program) in MAY_REFUSE else "trained"


@pytest.mark.parametrize("path", ["svi", "fit"])
@pytest.mark.parametrize("estimator", sorted(registry.ESTIMATORS))
@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_every_pair_trains_or_is_refused_by_name(program, estimator, path):
    outcome = _run(program, estimator, path)
    OUTCOMES[(program, estimator, path)] = outcome
    expected = _expected(program, estimator)
    assert expected in ("either", outcome), f"expected {expected}, got {outcome}"


def test_matrix_counts(capsys):
    """Report the counts (run after the matrix): every likelihood estimator that
    handles a program's latents trained it on both paths."""
    if len(OUTCOMES) < len(PROGRAMS) * len(registry.ESTIMATORS) * 2:
        pytest.skip("run with the whole matrix")
    trained = sum(v == "trained" for v in OUTCOMES.values())
    refused = sum(v == "refused" for v in OUTCOMES.values())
    must_train = sum(_expected(p, e) == "trained" for p, e, _ in OUTCOMES)
    with capsys.disabled():
        print(f"\nvalidity matrix: {len(OUTCOMES)} pairs ({len(PROGRAMS)} programs x "
              f"{len(registry.ESTIMATORS)} estimators x SVI/fit): {trained} trained, "
              f"{refused} refused by name, 0 failed")
    assert trained >= must_train
