"""NADE, MADE and the autoregressive-decoder VAEs: exact normalisation, the
autoregressive property, sampling, the Pyro site, training and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ppl_dgm.guides import EmptyGuide, GaussianEncoder
from ppl_dgm.models import MADE, MADEVAE, NADE, NADEVAE, OrderMixture
from ppl_dgm.models.autoregressive import AutoregressiveBernoulli
from ppl_dgm.models.made import MADENet
from ppl_dgm.models.nade import NADENet
from torch.autograd.functional import jacobian

from ppl_dgm.checks import check_model_data
from ppl_dgm.cli import main
from ppl_dgm.errors import DataError
from ppl_dgm.estimators import ELBO, IWAE
from ppl_dgm.evaluate import evaluate
from ppl_dgm.train import fit


def all_configurations(d: int, dtype=torch.float64) -> torch.Tensor:
    codes = torch.arange(2 ** d)
    return ((codes.unsqueeze(-1) >> torch.arange(d)) & 1).to(dtype)


EXACT_MODELS = {
    "nade-natural": lambda: NADE(10, 7),
    "nade-random-order-relu": lambda: NADE(10, 5, order="random", order_seed=3,
                                           activation="relu"),
    "made-1-mask": lambda: MADE(10, (13,)),
    "made-2-layers-direct": lambda: MADE(10, (13, 11), direct=True, activation="tanh"),
    "made-ensemble-5": lambda: MADE(10, (16,), num_masks=5),
    "made-order-agnostic-only": lambda: MADE(10, (16,), num_masks=3,
                                             connectivity_agnostic=False),
}


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Parameters far from initialisation, so that normalisation is not a coincidence."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("make", EXACT_MODELS.values(), ids=EXACT_MODELS.keys())
def test_log_prob_sums_to_one_over_all_configurations(make):
    model = make().double()
    _randomise(model)
    x = all_configurations(10)
    total = torch.logsumexp(model.log_prob(x), 0)
    assert abs(float(total.detach())) < 1e-10
    if isinstance(model, MADE):
        for m in range(model.net.num_masks):          # each ordering on its own, too
            assert abs(float(torch.logsumexp(model.log_prob(x, mask=m).detach(), 0))) < 1e-10


@pytest.mark.parametrize("net_cls", [MADENet, NADENet], ids=["made", "nade"])
def test_conditional_decoder_normalises_for_every_context(net_cls):
    opts = {"num_masks": 2} if net_cls is MADENet else {"order": "random"}
    net = net_cls(10, 12, context_dim=3, context_hidden=(6,), **opts).double()
    _randomise(net, seed=1)
    x = all_configurations(10)
    z = torch.randn(4, 3, dtype=torch.float64)
    # the ensemble (or single order) p(x | z) for 4 contexts at once: batch (4,) x (1024,)
    d = net.distribution(z.unsqueeze(1), (4, 1), ensemble=True)
    lp = d.log_prob(x)                                     # (4, 1024)
    assert lp.shape == (4, 1024)
    assert torch.allclose(torch.logsumexp(lp, -1), torch.zeros(4, dtype=torch.float64),
                          atol=1e-10)


def _check_autoregressive(fn, order: torch.Tensor, x0: torch.Tensor):
    jac = jacobian(fn, x0)                                 # (D out, D in)
    rank = torch.argsort(order)
    later_or_self = rank.unsqueeze(0) >= rank.unsqueeze(1)  # [d, d']: d' not before d
    assert torch.all(jac[later_or_self] == 0), "an output depends on itself or a later input"
    # and the network does use the earlier inputs (the test would pass for a constant)
    assert (jac[~later_or_self] != 0).float().mean() > 0.5


@pytest.mark.parametrize("direct", [False, True])
def test_made_masks_are_autoregressive_for_every_mask_set(direct):
    torch.manual_seed(0)
    net = MADENet(12, (40, 40), num_masks=4, direct=direct, activation="tanh",
                  context_dim=2).double()
    _randomise(net, seed=2)
    x0 = torch.rand(12, dtype=torch.float64)
    z = torch.randn(2, dtype=torch.float64)
    assert len({tuple(o.tolist()) for o in net.orders}) == 4   # order-agnostic: 4 orders
    for m in range(4):
        _check_autoregressive(lambda x, m=m: net(x, z, mask=m), net.orders[m], x0)


def test_nade_is_autoregressive_in_its_order():
    net = NADENet(9, 20, order="random", order_seed=5, context_dim=2).double()
    _randomise(net, seed=3)
    z = torch.randn(2, dtype=torch.float64)
    _check_autoregressive(lambda x: net(x, z), net.order, torch.rand(9, dtype=torch.float64))


def test_mask_options_follow_the_paper():
    both = MADENet(8, (30,), num_masks=3)
    assert both.order_agnostic and both.connectivity_agnostic
    conn = MADENet(8, (30,), num_masks=3, order_agnostic=False)
    assert all(torch.equal(o, torch.arange(8)) for o in conn.orders)
    assert not torch.equal(conn.mask0[0], conn.mask0[1])       # new hidden degrees
    orders_only = MADENet(8, (30,), num_masks=3, connectivity_agnostic=False)
    # the same hidden degrees, read in another ordering: the output masks agree once the
    # outputs are put in rank order
    r0, r1 = (torch.argsort(o) for o in orders_only.orders[:2])
    out = orders_only.mask1
    assert torch.equal(out[0][torch.argsort(r0)], out[1][torch.argsort(r1)])
    with pytest.raises(ValueError, match="repeat one mask"):
        MADENet(8, (30,), num_masks=3, order_agnostic=False, connectivity_agnostic=False)
    with pytest.raises(ValueError, match="permutation"):
        NADE(4, 3, order=[0, 1, 1, 2])
    with pytest.raises(ValueError, match="out of range"):
        MADE(4, (5,), num_masks=2).log_prob(torch.zeros(1, 4), mask=2)


def _frequencies(x: torch.Tensor) -> torch.Tensor:
    codes = (x * 2 ** torch.arange(x.shape[-1], dtype=x.dtype)).sum(-1).long()
    return torch.bincount(codes, minlength=2 ** x.shape[-1]).double() / x.shape[0]


SAMPLERS = {
    "nade": lambda: NADE(4, 6, order=[2, 0, 3, 1]),
    "made": lambda: MADE(4, (9,), direct=True),
    "made-ensemble": lambda: MADE(4, (9,), num_masks=3),
    "made-vae": lambda: MADEVAE(4, 2, hidden=(9,), context_hidden=(), num_masks=2),
}


@pytest.mark.parametrize("make", SAMPLERS.values(), ids=SAMPLERS.keys())
def test_ancestral_samples_follow_log_prob(make):
    torch.manual_seed(0)
    model = make().double()
    _randomise(model, seed=4)
    model.eval()
    n = 40000
    x = model.sample(n)
    assert x.shape == (n, 4) and set(x.unique().tolist()) <= {0.0, 1.0}
    configs = all_configurations(4)
    if isinstance(model, MADEVAE):      # p(x) = E_z p(x | z), by Monte Carlo over z
        z = torch.randn(20000, 1, 2, dtype=torch.float64)
        p = model.observation(z).log_prob(configs).exp().mean(0)
        mc = 1 / 20000 ** 0.5
    else:
        p = model.log_prob(configs).exp()
        mc = 0.0
    sd = (p * (1 - p) / n).sqrt()
    assert torch.all((_frequencies(x) - p).abs() < 5 * sd + 3 * mc * p + 1e-4)
    probs = model.sample(3, mean=True)
    assert probs.shape == (3, 4) and torch.all((probs > 0) & (probs < 1))


def test_training_mode_draws_a_mask_set_and_eval_mode_averages():
    model = MADE(6, (10,), num_masks=3)
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    d = model.net.distribution(ensemble=False)
    assert isinstance(d, AutoregressiveBernoulli)
    picked = {tuple(model.net.distribution().order.tolist()) for _ in range(60)}
    assert picked == {tuple(o.tolist()) for o in model.net.orders}
    model.eval()
    guide = EmptyGuide()
    summary = evaluate(model, guide, x, num_samples=4, ks=(1, 2)).summary
    exact = float(model.log_prob(x).mean().detach())
    for key in ("elbo", "iwae_2", "is", "exact"):       # no latents: every bound is exact
        assert summary[key] == pytest.approx(exact, abs=1e-5)
    assert isinstance(model.net.distribution(ensemble=True), OrderMixture)


@pytest.mark.parametrize("make", [lambda: NADE(6, 5), lambda: MADE(6, (8,), num_masks=1)],
                         ids=["nade", "made"])
def test_estimator_gradient_is_the_exact_likelihood_gradient(make):
    model = make().double()
    guide = EmptyGuide()
    x = torch.bernoulli(torch.full((7, 6), 0.4, dtype=torch.float64))
    for est in (ELBO(), IWAE(num_particles=3)):
        model.zero_grad()
        parts = est.surrogate(model, guide, x)
        parts.total.backward()
        got = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        (-model.log_prob(x).sum()).backward()
        want = [p.grad for p in model.parameters()]
        assert all(torch.allclose(g, w, atol=1e-10) for g, w in zip(got, want))
        assert float(parts.metrics["objective"]) == pytest.approx(
            float(model.log_prob(x).sum().detach()), abs=1e-8)


def test_fit_improves_nade_made_and_made_vae():
    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(1, 16).expand(400, 16).clone())
    for model, guide in ((NADE(16, 16), EmptyGuide()), (MADE(16, (32,), num_masks=2),
                                                        EmptyGuide())):
        before = float(model.log_prob(x).mean().detach())
        fit(model, guide, ELBO(), x, steps=150, batch_size=50, lr=1e-2, log_every=50)
        model.eval()
        assert float(model.log_prob(x).mean().detach()) > before + 2.0
    vae = MADEVAE(16, 2, hidden=(32,), context_hidden=(16,))
    enc = GaussianEncoder.from_model(vae, hidden=(16,))
    before = evaluate(vae.eval(), enc, x, num_samples=20, ks=()).summary["is"]
    fit(vae, enc, IWAE(num_particles=2), x, steps=150, batch_size=50, lr=1e-2, log_every=50)
    after = evaluate(vae.eval(), enc, x, num_samples=20, ks=(1,)).summary
    assert after["is"] > before + 2.0 and after["elbo"] <= after["is"] + 1e-4


NON_BINARY = {
    "nade": lambda: NADE(5, 4),
    "made": lambda: MADE(5, (6,), num_masks=2),
    "made-vae": lambda: MADEVAE(5, 2, hidden=(6,)),
    "nade-vae": lambda: NADEVAE(5, 2, hidden=4),
}


@pytest.mark.parametrize("make", NON_BINARY.values(), ids=NON_BINARY.keys())
def test_non_binary_data_is_refused_by_name(make):
    model = make()
    x = torch.bernoulli(torch.full((6, 5), 0.5))
    check_model_data(model, x)                       # binary data passes
    x[3, 1] = 0.5
    with pytest.raises(DataError, match=r"outside the support.*AutoregressiveBernoulli.*"
                                        r"binary 0/1 data"):
        check_model_data(model, x)
    if isinstance(model, (NADE, MADE)):
        with pytest.raises(ValueError, match=r"binary vectors.*first rows \[3\].*binarise"):
            model.log_prob(x)
        guide = EmptyGuide()
    else:
        guide = GaussianEncoder.from_model(model)
    with pytest.raises(DataError, match="binary 0/1"):
        fit(model, guide, ELBO(), x, steps=1, batch_size=6)


def test_cli_trains_and_evaluates_made_and_refuses_non_binary(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["--steps", "20", "--log-every", "10", "--eval-every", "0", "--eval-samples", "5",
              "--no-progress"]
    assert main(["train", "--model", "made", "--model-opt", "hidden=32",
                 "--model-opt", "num_masks=2", "--run-dir", "m", *common]) == 0
    out = capsys.readouterr().out
    assert "made + empty" in out and "test log-likelihood (exact)" in out
    assert main(["evaluate", "m", "--samples", "3", "--ks", "2"]) == 0
    assert "log p(x), exact" in capsys.readouterr().out
    assert main(["sample", "m", "--n", "4"]) == 0
    assert main(["train", "--model", "made-vae", "--model-opt", "hidden=32",
                 "--run-dir", "v", *common]) == 0
    assert "made-vae + gaussian" in capsys.readouterr().out
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    for name in ("nade", "made", "made-vae", "nade-vae", "empty"):
        assert f"  {name} " in listed
    rng = np.random.default_rng(0)
    np.save(tmp_path / "real.npy", rng.random((200, 8)).astype(np.float32))
    assert main(["train", "--model", "nade", "--data", str(tmp_path / "real.npy"),
                 "--batch-size", "20", "--run-dir", "n", *common]) == 2
    assert "binary 0/1 data" in capsys.readouterr().err

