"""The VAE of Pyro's tutorial (https://pyro.ai/examples/vae.html), in its own form:
``nn.Module`` encoder and decoder, ``model``/``guide`` methods registering them with
``pyro.module``, sites ``"latent"`` and ``"obs"`` -- trained by ppl_dgm's estimators
unchanged, on the embedded binarised digits.

    python examples/pyro_vae.py --steps 3000
    ppl-dgm compare --model examples/pyro_vae.py:model --guide examples/pyro_vae.py:guide \\
        --estimators elbo,iwae,rws-dreg --steps 2000 --seeds 2 --out runs/pyro-vae

``model`` and ``guide`` at module level are the bound methods of one ``VAE``; the command
line and :func:`ppl_dgm.compare.compare` take them as they are.
"""

from __future__ import annotations

import argparse

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_dgm.data import load_digits
from ppl_dgm.estimators import ELBO, IWAE, DRegRWS
from ppl_dgm.evaluate import evaluate
from ppl_dgm.programs import set_training
from ppl_dgm.train import fit


class Decoder(nn.Module):
    def __init__(self, z_dim, hidden_dim, x_dim=64):
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, x_dim)
        self.softplus = nn.Softplus()

    def forward(self, z):
        hidden = self.softplus(self.fc1(z))
        return torch.sigmoid(self.fc21(hidden))


class Encoder(nn.Module):
    def __init__(self, z_dim, hidden_dim, x_dim=64):
        super().__init__()
        self.fc1 = nn.Linear(x_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)
        self.fc22 = nn.Linear(hidden_dim, z_dim)
        self.softplus = nn.Softplus()

    def forward(self, x):
        hidden = self.softplus(self.fc1(x))
        return self.fc21(hidden), torch.exp(self.fc22(hidden))


class VAE(nn.Module):
    def __init__(self, z_dim=8, hidden_dim=200, x_dim=64):
        super().__init__()
        self.encoder = Encoder(z_dim, hidden_dim, x_dim)
        self.decoder = Decoder(z_dim, hidden_dim, x_dim)
        self.z_dim = z_dim

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z_scale = x.new_ones(torch.Size((x.shape[0], self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = self.decoder(z)
            pyro.sample("obs", dist.Bernoulli(loc_img, validate_args=False).to_event(1),
                        obs=x.reshape(-1, 64))

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))


torch.manual_seed(0)
vae = VAE()
model, guide = vae.model, vae.guide


def main(argv=None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--samples", type=int, default=1000, help="importance samples for log p(x)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    data = load_digits()
    results = {}
    for name, est in (("elbo", ELBO()), ("iwae-5", IWAE(num_particles=5)),
                      ("rws-dreg-5", DRegRWS(num_particles=5))):
        pyro.clear_param_store()
        torch.manual_seed(args.seed)           # the same initial networks for each
        net = VAE()
        fit(net.model, net.guide, est, data, steps=args.steps, seed=args.seed, device="cpu",
            log_every=max(1, min(500, args.steps)))
        set_training(False, net.model, net.guide)
        res = evaluate(net.model, net.guide, data.test, num_samples=args.samples, ks=(1, 50))
        results[name] = res.summary
        print(f"{name:<11} test ELBO {res.summary['elbo']:8.3f}  IWAE-50 "
              f"{res.summary['iwae_50']:8.3f}  log p(x) (IS, K={args.samples}) "
              f"{res.summary['is']:8.3f}")
    return results


if __name__ == "__main__":
    main()
