"""The unified view (Hu, Yang, Salakhutdinov and Xing 2017): GAN objectives as
inference of the real/generated indicator, IWGAN (Eq. 16) and AAVAE (Eq. 17)."""

import math

import pytest
import torch
from ppl_dgm.guides import Discriminator, GaussianEncoder
from ppl_dgm.models import VAE, Generator
from pyro import poutine
from torch.nn import functional as F

from ppl_dgm.cli import main
from ppl_dgm.estimators import AAVAE, ELBO, IWGAN, NSGAN
from ppl_dgm.estimators._adversarial import generator_loss
from ppl_dgm.estimators.aavae import aavae_objective
from ppl_dgm.estimators.iwgan import importance_weighted_generator_loss
from ppl_dgm.train import fit


def grads(module):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for p in module.parameters()]


def zero(*modules):
    for m in modules:
        for p in m.parameters():
            p.grad = None


# ----------------------------------------------------------------------- GAN as inference
def test_nsgan_updates_are_the_unified_objectives():
    """Eq. 3: discriminator max_phi E_{p(x|y)p(y)} log q_phi(y|x); generator max_theta
    E_{p(x|y)p(y)} log q^r_phi(y|x), q^r(y|x) = q(1-y|x), p(y) uniform.  With n real and
    n generated points the NSGAN surrogate's gradients are -2n times the gradients of
    these expectations (the y=1 term of the generator's objective is theta-free)."""
    torch.manual_seed(0)
    gen = Generator(x_dim=3, z_dim=2, hidden=(5,), output="identity").double()
    disc = Discriminator(x_dim=3, hidden=(4,)).double()
    n = 6
    x, z = torch.randn(n, 3, dtype=torch.float64), torch.randn(n, 2, dtype=torch.float64)
    NSGAN().surrogate(poutine.condition(gen, data={"z": z}), disc, x).total.backward()
    g_gen, g_disc = grads(gen), grads(disc)
    fake = gen.generate(z)

    def log_q(y, logits):  # log q_phi(y|x) of the Bernoulli indicator
        return -F.softplus(-logits) if y == 1 else -F.softplus(logits)

    lr, lf = disc.logits(x), disc.logits(fake.detach())
    l_disc = 0.5 * log_q(1, lr).mean() + 0.5 * log_q(0, lf).mean()
    ref_disc = torch.autograd.grad(l_disc, list(disc.parameters()))
    for p in disc.parameters():
        p.requires_grad_(False)
    l_gen = 0.5 * log_q(0, disc.logits(x)).mean() + 0.5 * log_q(1, disc.logits(fake)).mean()
    ref_gen = torch.autograd.grad(l_gen, list(gen.parameters()))
    for a, b in zip(g_disc, ref_disc):
        assert torch.allclose(a, -2 * n * b, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_gen, ref_gen):
        assert torch.allclose(a, -2 * n * b, rtol=1e-10, atol=1e-12)


def test_lemma1_with_optimal_discriminator():
    """Eq. 8 (Lemma 1 with D = D*_theta0): the gradient of the non-saturating generator
    loss, (1/2) grad E_z[-log D*(G_theta(z))], equals grad [KL(p_g||p_data)/2 -
    JSD(p_g||p_data)] at theta0, for p_data = N(0, 1), p_g = N(theta, 1), by quadrature."""
    theta0 = 0.7
    xs = torch.linspace(-12, 12, 24001, dtype=torch.float64)
    dx = float(xs[1] - xs[0])

    def log_normal(x, mu):
        return -0.5 * (x - mu) ** 2 - 0.5 * math.log(2 * math.pi)

    # left: D* fixed at theta0, generator x = theta + z moves the samples
    theta = torch.tensor(theta0, dtype=torch.float64, requires_grad=True)
    zs = xs - theta0
    x = theta + zs
    logits = log_normal(x, 0.0) - log_normal(x, theta0)  # log p_data - log p_g0
    per_point = F.softplus(-logits)  # = -log D*(x), generator_loss per sample
    assert torch.isclose(generator_loss(logits[:3]), per_point[:3].sum())
    left = 0.5 * (per_point * log_normal(zs, 0.0).exp()).sum() * dx
    (g_left,) = torch.autograd.grad(left, theta)

    # right: KL(N(theta,1)||N(0,1)) = theta^2/2; JSD by quadrature
    theta = torch.tensor(theta0, dtype=torch.float64, requires_grad=True)
    lp, lq = log_normal(xs, theta), log_normal(xs, 0.0)
    lm = torch.logaddexp(lp, lq) - math.log(2)
    jsd = 0.5 * ((lp.exp() * (lp - lm)).sum() + (lq.exp() * (lq - lm)).sum()) * dx
    right = 0.5 * theta**2 / 2 - jsd
    (g_right,) = torch.autograd.grad(right, theta)
    assert abs(float(g_left) - float(g_right)) < 1e-6


# ----------------------------------------------------------------------- IWGAN
def test_iwgan_with_one_particle_is_the_nonsaturating_gan_exactly():
    """K = 1: the normalised weight is exactly 1, so the surrogate, its gradients and a
    whole training run coincide bit for bit with NSGAN."""
    def run(est, steps):
        torch.manual_seed(0)
        gen = Generator(x_dim=4, z_dim=2, hidden=(8,), output="identity")
        disc = Discriminator(x_dim=4, hidden=(8,))
        x = torch.randn(64, 4)
        torch.manual_seed(1)
        parts = est.surrogate(gen, disc, x[:16])
        parts.total.backward()
        g = grads(gen) + grads(disc)
        zero(gen, disc)
        fit(gen, disc, est, x, steps=steps, batch_size=16, device="cpu", log_every=steps)
        return parts.total.detach(), g, [p.detach() for p in
                                         list(gen.parameters()) + list(disc.parameters())]

    t1, g1, p1 = run(NSGAN(), 12)
    t2, g2, p2 = run(IWGAN(num_particles=1), 12)
    assert torch.equal(t1, t2)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))


def test_importance_weights_are_d_over_one_minus_d():
    """w = q^r(y=0|x)/q(y=0|x) = D/(1-D) = exp(logit), normalised per group: the
    gradient with respect to the logits is -w~ (1 - D)."""
    logits = torch.tensor([[0.0, 1.0], [2.0, -1.0], [-1.0, 0.5]], requires_grad=True)
    loss = importance_weighted_generator_loss(logits)
    (g,) = torch.autograd.grad(loss, logits)
    d = torch.sigmoid(logits.detach())
    w = (d / (1 - d)) / (d / (1 - d)).sum(0)
    assert torch.allclose(g, -w * (1 - d), atol=1e-6)


def test_iwgan_batch_grouping():
    """group="batch" normalises over the whole generated minibatch (the paper's
    practice) and keeps the GAN's gradient scale (times the number of real points)."""
    torch.manual_seed(0)
    gen = Generator(x_dim=3, z_dim=2, hidden=(5,), output="identity").double()
    disc = Discriminator(x_dim=3, hidden=(4,)).double()
    x, z = torch.randn(4, 3, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    parts = IWGAN(num_particles=2, group="batch").surrogate(
        poutine.condition(gen, data={"z": z}), disc, x)
    lf = disc.logits(gen.generate(z))
    w = torch.softmax(lf.detach(), 0)
    assert torch.isclose(parts.parts["generator"], 4 * (w * F.softplus(-lf)).sum())
    assert 0 < float(parts.metrics["iw_ess"]) <= 1
    with pytest.raises(ValueError, match="group"):
        IWGAN(group="minibatch")


# ----------------------------------------------------------------------- AAVAE
class Perfect(torch.nn.Module):
    """The VAE's implicit discriminator q_*: answers "real" (logit +inf) exactly on the
    rows of the real data and "generated" (logit -inf) on anything else."""

    def __init__(self, real):
        super().__init__()
        self.register_buffer("real", real)

    def forward(self, x):
        hit = (x[:, None, :] == self.real[None]).all(-1).any(-1)
        return torch.where(hit, math.inf, -math.inf).to(x.dtype)


class Constant(torch.nn.Module):
    def __init__(self, logit):
        super().__init__()
        self.logit = logit

    def forward(self, x):
        return torch.full((x.shape[0],), self.logit, dtype=x.dtype)


def _vae():
    torch.manual_seed(0)
    model = VAE(x_dim=16, z_dim=2, hidden=(8,))
    guide = GaussianEncoder.from_model(model, hidden=(8,))
    x = (torch.rand(10, 16) > 0.5).float()
    return model, guide, x


def _grads_of(est, model, guide, x, seed=3):
    zero(model, guide)
    torch.manual_seed(seed)
    parts = est.surrogate(model, guide, x)
    parts.total.backward()
    return parts, grads(model) + grads(guide)


@pytest.mark.parametrize("case", ["perfect-discriminator", "always-generated-unweighted-real"])
def test_aavae_reduces_to_the_vae(case):
    """Lemma 2: with the perfect discriminator (real -> "real", generated ->
    "generated") AAVAE's gradients are exactly the ELBO's.  Under REFERENCES.md's
    reading (weight_real=False) a discriminator that always answers "generated" gives
    the same."""
    model, guide, x = _vae()
    _, ref = _grads_of(ELBO(), model, guide, x)
    if case == "perfect-discriminator":
        est = AAVAE(discriminator=Perfect(x))
    else:
        est = AAVAE(discriminator=Constant(-math.inf), weight_real=False)
    parts, got = _grads_of(est, model, guide, x)
    assert float(parts.metrics["d_fake"]) == 0.0  # no generated sample was let in
    assert all(torch.equal(a, b) for a, b in zip(got, ref))
    torch.manual_seed(3)
    elbo = ELBO().surrogate(model, guide, x).metrics["objective"]
    assert torch.equal(parts.metrics["objective"], elbo)


def test_aavae_paper_weights_real_examples_too():
    """The paper weights real examples by q^r(y=0|x) = D(x) as well: a constant
    D = c scales real and generated ELBOs alike, and D = 0 everywhere gives 0."""
    e_r, e_f = torch.tensor([-3.0, -4.0]), torch.tensor([-5.0, -6.0])
    c = torch.full((2,), 0.25)
    assert torch.isclose(aavae_objective(e_r, e_f, c, c), torch.tensor(0.25 * -18.0))
    model, guide, x = _vae()
    parts, got = _grads_of(AAVAE(discriminator=Constant(-math.inf)), model, guide, x)
    assert float(parts.metrics["objective"]) == 0.0
    assert all(bool((g == 0).all()) for g in got)


def test_aavae_routing():
    """The weighted-ELBO part reaches only the VAE (the weights are detached); the
    discriminator's part reaches only the discriminator."""
    model, guide, x = _vae()
    est = AAVAE(disc_hidden=(8,))
    est.prepare(model, guide, x)
    disc = est.discriminator
    for part, owners, others in (("aavae", (model, guide), (disc,)),
                                 ("discriminator", (disc,), (model, guide))):
        torch.manual_seed(0)
        parts = est.surrogate(model, guide, x).parts
        zero(model, guide, disc)
        parts[part].backward()
        assert all(any(p.grad is not None and bool(p.grad.abs().sum() > 0)
                       for p in m.parameters()) for m in owners), part
        assert all(p.grad is None or bool((p.grad == 0).all())
                   for m in others for p in m.parameters()), part


def test_aavae_builds_and_restores_its_discriminator():
    model, guide, x = _vae()
    est = AAVAE(disc_hidden=(8,))
    assert est.discriminator is None
    est.prepare(model, guide, x)
    assert est.discriminator[0].in_features == 16
    fresh = AAVAE(disc_hidden=(8,))
    fresh.load_state_dict(est.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), est.parameters()))
    assert est.active_groups(0) is None
    alt = AAVAE(n_critic=1)
    assert alt.active_groups(0) == frozenset({"estimator"})
    assert alt.active_groups(1) == frozenset({"model", "guide"})


def test_aavae_cli_train_evaluate_sample(tmp_path, capsys):
    run = str(tmp_path / "aavae")
    assert main(["train", "--model", "vae", "--estimator", "aavae", "--steps", "20",
                 "--log-every", "10", "--eval-every", "10", "--eval-samples", "20",
                 "--model-opt", "hidden=32", "--estimator-opt", "disc_hidden=(16,)",
                 "--run-dir", run, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "test log-likelihood" in out
    assert main(["evaluate", run, "--samples", "20", "--ks", "1"]) == 0
    assert main(["sample", run, "--n", "16"]) == 0
    assert (tmp_path / "aavae" / "samples.png").exists()
