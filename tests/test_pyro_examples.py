"""Programs from Pyro's examples and tutorials in their own form (examples/pyro_vae.py,
ss_vae.py, sparse_gamma_def.py): they train through fit, and at fixed parameters
ppl_dgm's loss equals Pyro's Trace_ELBO / TraceGraph_ELBO loss in expectation (two
independent means within Z = 4.5 combined standard errors)."""

import math
import warnings

import pyro
import pytest
import torch
from examples_loader import load_example
from pyro.infer import Trace_ELBO, TraceGraph_ELBO

from ppl_dgm.data import load_digits
from ppl_dgm.errors import ParticleWarning
from ppl_dgm.estimators import ELBO, REINFORCE

Z = 4.5


def _mean_se(values):
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std()) / math.sqrt(len(values))


@pytest.mark.parametrize("name,ours,pyros", [
    ("pyro_vae", ELBO, Trace_ELBO),
    ("ss_vae", REINFORCE, TraceGraph_ELBO),
    ("sparse_gamma_def", ELBO, Trace_ELBO),
])
def test_loss_equals_pyros_in_expectation(name, ours, pyros):
    ex = load_example(name)
    x = ex.counts() if name == "sparse_gamma_def" else load_digits().test[:50]
    pyro.clear_param_store()
    torch.manual_seed(0)
    ours_est, pyro_est = ours(), pyros()
    a = [ours_est.loss(ex.model, ex.guide, x) for _ in range(300)]
    b = [pyro_est.loss(ex.model, ex.guide, x) for _ in range(300)]
    (ma, sa), (mb, sb) = _mean_se(a), _mean_se(b)
    assert abs(ma - mb) <= Z * math.hypot(sa, sb), (ma, mb, sa, sb)


def test_examples_train_through_fit():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vae = load_example("pyro_vae").main(["--steps", "20", "--samples", "20"])
        ss = load_example("ss_vae").main(["--steps", "10", "--samples", "10"])
        gdef = load_example("sparse_gamma_def").main(["--steps", "10"])
    assert set(vae) == {"elbo", "iwae-5", "rws-dreg-5"}
    assert set(ss) == {"reinforce", "nvil", "vimco-5", "rws-5"}
    assert all(math.isfinite(r["is"]) for r in [*vae.values(), *ss.values()])
    assert all(math.isfinite(v) for v in gdef.values())
    # the tutorial's torch.cat([xs, ys], -1) guide and the DEF's broadcasting matmul run
    # their particles one by one, and say so once each
    said = [str(w.message) for w in caught if issubclass(w.category, ParticleWarning)]
    assert any("Tensors must have same number of dimensions" in s for s in said)   # ss_vae
    assert any("'z_mid'" in s for s in said)                  # DEF: a (K, K, ...) broadcast
    assert len(said) == 2
