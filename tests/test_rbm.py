"""RBMs on tiny models, exact by enumeration in float64: log Z (exact, AIS), the CD-k
gradient against the enumerated Gibbs transition, PCD's model term against the exact
model expectation, block-Gibbs samples against the exact distribution, and the refusals
of bad input."""

from __future__ import annotations

import math

import pytest
import torch
from ppl_dgm.guides import EmptyGuide
from ppl_dgm.models import RBM
from scipy import stats

from ppl_dgm import ais
from ppl_dgm.data import load_digits
from ppl_dgm.errors import DataError, IncompatibleEstimatorError
from ppl_dgm.estimators import ELBO, IWAE, ContrastiveDivergence, PersistentCD
from ppl_dgm.evaluate import evaluate
from ppl_dgm.train import fit

D = torch.float64


def _states(n: int) -> torch.Tensor:
    codes = torch.arange(2 ** n)
    return ((codes.unsqueeze(-1) >> torch.arange(n)) & 1).to(D)


def _random_rbm(x_dim, hidden, *, scale=1.0, seed=0, visible="bernoulli") -> RBM:
    model = RBM(x_dim, hidden, visible=visible).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.layer.weight.copy_(scale * torch.randn(x_dim, hidden, generator=g, dtype=D))
        model.layer.visible_bias.copy_(0.5 * torch.randn(x_dim, generator=g, dtype=D))
        model.layer.hidden_bias.copy_(0.5 * torch.randn(hidden, generator=g, dtype=D))
    return model


def _params(model):
    layer = model.layer
    return [layer.weight, layer.visible_bias, layer.hidden_bias]


# --------------------------------------------------------------------------- log Z
def test_exact_log_z_matches_brute_force_both_ways():
    model = _random_rbm(5, 4)
    W, b, c = (p.detach() for p in _params(model))
    v, h = _states(5), _states(4)
    energy = -(v @ b)[:, None] - (h @ c)[None, :] - v @ W @ h.T
    brute = float(torch.logsumexp(-energy.flatten(), 0))
    assert ais.log_z_exact(W, b, c).value == pytest.approx(brute, abs=1e-10)       # over v
    assert ais.log_z_exact(W.T, c, b).value == pytest.approx(brute, abs=1e-10)     # over h
    assert float(torch.exp(model.log_prob(v)).sum()) == pytest.approx(1.0, abs=1e-10)


def test_gaussian_rbm_log_z_matches_numerical_integration():
    model = _random_rbm(2, 3, scale=0.7, visible="gaussian")
    grid = torch.linspace(-12, 12, 1201, dtype=D)
    v = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        numeric = float(torch.logsumexp(-model.free_energy(v), 0)
                        + 2 * torch.log(grid[1] - grid[0]))
    assert model.log_partition().value == pytest.approx(numeric, abs=1e-8)


def test_ais_is_within_its_spread_of_the_exact_log_z_and_the_spread_shrinks():
    """12 visible x 10 hidden, weights N(0, 1): three standard errors (the reported
    spread) cover the exact value at 1000 and 10000 temperatures, and the spread falls
    as the temperatures grow (10 -> 100 -> 1000 -> 10000)."""
    model = _random_rbm(12, 10)
    W, b, c = (p.detach() for p in _params(model))
    exact = ais.log_z_exact(W, b, c).value
    spreads = []
    for t in (10, 100, 1000, 10000):
        g = torch.Generator().manual_seed(t)
        if t < ais.MIN_TEMPERATURES:
            with pytest.warns(ais.AISWarning, match=r"\+- [0-9.]+"):
                est = ais.ais_log_z(W, b, c, num_temperatures=t, num_runs=100, generator=g,
                                    progress=False)
        else:
            est = ais.ais_log_z(W, b, c, num_temperatures=t, num_runs=100, generator=g,
                                progress=False)
            assert abs(est.value - exact) <= est.spread, (t, est, exact)
        spreads.append(est.spread)
    assert spreads == sorted(spreads, reverse=True), spreads
    assert spreads[-1] < 0.05


def test_gaussian_rbm_ais_within_spread():
    model = _random_rbm(6, 5, scale=0.4, visible="gaussian")
    W, b, c = (p.detach() for p in _params(model))
    exact = model.log_partition().value
    est = ais.ais_log_z(W, b, c, "gaussian", num_temperatures=2000, num_runs=100,
                        generator=torch.Generator().manual_seed(1), progress=False)
    assert abs(est.value - exact) <= est.spread


def test_enumeration_beyond_the_limit_names_the_limit_and_suggests_ais():
    W = torch.zeros(30, 25)
    with pytest.raises(ais.EnumerationLimitError, match=r"limit of 20.*AIS|annealed"):
        ais.log_z_exact(W, torch.zeros(30), torch.zeros(25))
    model = RBM(30, 25, ais_temperatures=1000, ais_runs=10)
    assert not model.can_enumerate
    assert model.log_partition().method == "ais"      # switches to AIS by itself
    assert model.log_partition() is model.log_partition()   # cached


# --------------------------------------------------------------------------- CD-k
def _grad(total, params):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(total, params)])


def _free_energy_grads(model, v):
    """d F(v) / d params for each state, shape (S, P)."""
    return torch.stack([_grad(model.free_energy(s[None]).sum(), _params(model)) for s in v])


def _transition(model) -> torch.Tensor:
    """T[v, v'] = sum_h p(h | v) p(v' | h), over all visible states."""
    v, h = _states(model.x_dim), _states(model.hidden)
    layer = model.layer
    with torch.no_grad():
        ph = torch.sigmoid(v @ layer.weight + layer.hidden_bias)              # (V, H)
        p_h = torch.prod(h[None] * ph[:, None] + (1 - h[None]) * (1 - ph[:, None]), -1)
        pv = torch.sigmoid(h @ layer.weight.T + layer.visible_bias)           # (Hs, D)
        p_v = torch.prod(v[None] * pv[:, None] + (1 - v[None]) * (1 - pv[:, None]), -1)
    return p_h @ p_v


@pytest.mark.parametrize("k", [1, 3])
def test_cd_k_gradient_is_the_exact_data_term_minus_the_exact_k_step_chain_term(k):
    model, guide = _random_rbm(3, 2, scale=1.5), EmptyGuide()
    x = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 0]], dtype=D)
    states = _states(3)
    index = (x * (2 ** torch.arange(3, dtype=D))).sum(-1).long()
    grads = _free_energy_grads(model, states)                                  # (8, P)
    tk = torch.linalg.matrix_power(_transition(model), k)                      # (8, 8)
    exact = grads[index].sum(0) - (tk[index] @ grads).sum(0)
    est, reps, draws = ContrastiveDivergence(k=k), 400, 25
    xs = x.repeat(reps, 1)
    g = torch.stack([_grad(est.surrogate(model, guide, xs).total, _params(model)) / reps
                     for _ in range(draws)])
    se = g.std(0) / math.sqrt(draws)
    assert torch.all((g.mean(0) - exact).abs() <= 4 * se + 1e-9), (g.mean(0), exact, se)


def test_pcd_model_term_approaches_the_exact_model_expectation():
    """At fixed parameters the persistent chains converge to p(v): the model term of
    the surrogate, n * mean_c dF(v_c), reaches n * E_p[dF(v)] within Monte Carlo error,
    from an error several times larger at the random start."""
    model, guide = _random_rbm(4, 3, scale=1.5, seed=2), EmptyGuide()
    x = _states(4)[:5]
    v = _states(4)
    p = torch.exp(model.log_prob(v))
    grads = _free_energy_grads(model, v)
    exact = p @ grads
    sd = torch.sqrt(p @ (grads - exact) ** 2)
    est = PersistentCD(num_chains=2000, k=1)
    est.prepare(model, guide, x)

    def model_term():
        parts = est.surrogate(model, guide, x).parts
        return _grad(parts["model"], _params(model)) / (-x.shape[0])

    start = model_term()
    for _ in range(30):
        model_term()
    late = torch.stack([model_term() for _ in range(10)]).mean(0)
    tol = 4 * sd / math.sqrt(2000)
    assert torch.all((late - exact).abs() <= tol), (late, exact, tol)
    assert (start - exact).abs().max() > 3 * (late - exact).abs().max()


def test_block_gibbs_samples_match_the_exact_distribution():
    model = _random_rbm(4, 3, scale=1.5, seed=3)
    v = _states(4)
    p = torch.exp(model.log_prob(v))
    for draw in (lambda n: model.sample(n, steps=100),
                 lambda n: model.distribution(normalised=False).expand((n,)).sample()):
        x = draw(20000)
        counts = torch.bincount((x * 2 ** torch.arange(4, dtype=D)).sum(-1).long(),
                                minlength=16)
        result = stats.chisquare(counts.numpy(), (20000 * p).numpy())
        assert result.pvalue > 1e-3, result


# --------------------------------------------------------------------------- refusals
def test_non_binary_data_is_refused_with_the_fix():
    data = load_digits()
    with pytest.raises(DataError, match="binar"):
        fit(RBM(64, 8), EmptyGuide(), ContrastiveDivergence(), data.train * 0.5, steps=1)
    with pytest.raises(DataError, match="binarise.*gaussian"):   # the estimator's own check
        ContrastiveDivergence().loss(RBM(64, 8), EmptyGuide(), data.train[:10] * 0.5)


@pytest.mark.parametrize("estimator", [ELBO(), IWAE(num_particles=5)])
def test_likelihood_estimators_refuse_an_rbm_and_suggest_cd(estimator):
    data = load_digits()
    with pytest.raises(IncompatibleEstimatorError, match=r"'x'.*energy-based.*'cd'.*'pcd'"):
        fit(RBM(64, 8), EmptyGuide(), estimator, data, steps=1)


def test_cd_refuses_a_model_without_energy_sites_and_bad_options():
    from ppl_dgm.guides import HelmholtzGuide
    from ppl_dgm.models import SigmoidBeliefNet

    sbn = SigmoidBeliefNet(64, (4,))
    with pytest.raises(IncompatibleEstimatorError, match="energy-based"):
        fit(sbn, HelmholtzGuide.from_model(sbn), ContrastiveDivergence(), load_digits(),
            steps=1)
    with pytest.raises(ValueError, match="k"):
        ContrastiveDivergence(k=0)
    with pytest.raises(ValueError, match="num_particles=1"):
        PersistentCD(num_particles=5)


# --------------------------------------------------------------------------- training
def test_cd_and_pcd_train_an_rbm_on_digits_and_evaluate_reports_exact_log_px():
    """400 steps of CD-1 / PCD from the same start lower the exact test NLL below the
    untrained RBM's 64 log 2 = 44.4 nats and below the factorised-Bernoulli 25.3."""
    data = load_digits()
    for est in (ContrastiveDivergence(k=1), PersistentCD(num_chains=50)):
        torch.manual_seed(0)
        model = RBM(64, 8)
        fit(model, EmptyGuide(), est, data, steps=400, lr=1e-2, device="cpu")
        ev = evaluate(model, EmptyGuide(), data.test, num_samples=10, ks=(1,), repeats=1)
        assert ev.summary["exact"] == pytest.approx(ev.summary["is"], abs=1e-4)
        assert -ev.summary["exact"] < 25.3, est.name
    assert est.aux.chains_x.shape == (50, 64)     # persistent chains are buffers
    assert "chains_x" in est.state_dict()


def test_rbm_benchmark_runs(capsys):
    """benchmarks/bench_rbm.py at tiny sizes (timings are not asserted)."""
    import importlib.util
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        spec = importlib.util.spec_from_file_location("bench_rbm", bench / "bench_rbm.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(bench))
    module.main(["--batch", "8", "--repeats", "1", "--warmup", "1", "--threads", "1",
                 "--visible", "16", "--hidden", "8", "--ais-temperatures", "100",
                 "--ais-runs", "4"])
    out = capsys.readouterr().out
    assert "ours/hand-autograd" in out and "ms per 1000 temperatures" in out
