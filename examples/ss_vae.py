"""A discrete class and a continuous style: the generative model of Pyro's
semi-supervised VAE tutorial (https://pyro.ai/examples/ss-vae.html), on unlabelled
binarised digits, written the ordinary Pyro way (plain functions, ``pyro.module``).

    y ~ Categorical(1/10),  z ~ N(0, I),  x ~ Bernoulli(decoder([onehot(y), z]))

The guide infers the class first, then the style from ``torch.cat([x, onehot(y)], -1)``,
as the tutorial writes it.  That line cannot run with a leading particle dimension, so
multi-sample estimators draw their particles one by one (ppl_dgm says so once, with how
to vectorise it).  The discrete class gets score-function gradients, the style pathwise
ones.

    python examples/ss_vae.py --steps 2000
    ppl-dgm compare --model examples/ss_vae.py:model --guide examples/ss_vae.py:guide \\
        --estimators reinforce,nvil,vimco,rws --steps 1000 --seeds 2 --out runs/ss-vae
"""

from __future__ import annotations

import argparse

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ppl_dgm.data import load_digits
from ppl_dgm.estimators import NVIL, REINFORCE, VIMCO, ReweightedWakeSleep
from ppl_dgm.evaluate import evaluate
from ppl_dgm.train import fit

NUM_CLASSES, Z_DIM, X_DIM, HIDDEN = 10, 4, 64, 100

torch.manual_seed(0)
decoder = nn.Sequential(nn.Linear(NUM_CLASSES + Z_DIM, HIDDEN), nn.Softplus(),
                        nn.Linear(HIDDEN, X_DIM))
encoder_y = nn.Sequential(nn.Linear(X_DIM, HIDDEN), nn.Softplus(),
                          nn.Linear(HIDDEN, NUM_CLASSES))
encoder_z = nn.Sequential(nn.Linear(X_DIM + NUM_CLASSES, HIDDEN), nn.Softplus(),
                          nn.Linear(HIDDEN, 2 * Z_DIM))


def model(xs):
    pyro.module("ss_vae_decoder", decoder)
    batch = xs.shape[0]
    with pyro.plate("data", batch):
        alpha_prior = xs.new_ones(batch, NUM_CLASSES) / NUM_CLASSES
        ys = pyro.sample("y", dist.OneHotCategorical(alpha_prior))
        zs = pyro.sample("z", dist.Normal(xs.new_zeros(batch, Z_DIM),
                                          xs.new_ones(batch, Z_DIM)).to_event(1))
        logits = decoder(torch.cat([ys, zs], -1))
        pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=xs)


def guide(xs):
    pyro.module("ss_vae_encoder_y", encoder_y)
    pyro.module("ss_vae_encoder_z", encoder_z)
    with pyro.plate("data", xs.shape[0]):
        ys = pyro.sample("y", dist.OneHotCategorical(logits=encoder_y(xs)))
        loc, raw = encoder_z(torch.cat([xs, ys], -1)).chunk(2, -1)
        pyro.sample("z", dist.Normal(loc, F.softplus(raw) + 1e-3).to_event(1))


def main(argv=None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--samples", type=int, default=500, help="importance samples for log p(x)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    data = load_digits()
    start = {name: p.detach().clone() for m in (decoder, encoder_y, encoder_z)
             for name, p in m.named_parameters(prefix=str(id(m)))}
    results = {}
    for name, est in (("reinforce", REINFORCE()), ("nvil", NVIL()),
                      ("vimco-5", VIMCO(num_particles=5)),
                      ("rws-5", ReweightedWakeSleep(num_particles=5))):
        with torch.no_grad():                   # the same initial networks for each
            for m in (decoder, encoder_y, encoder_z):
                for pname, prm in m.named_parameters(prefix=str(id(m))):
                    prm.copy_(start[pname])
        pyro.clear_param_store()
        fit(model, guide, est, data, steps=args.steps, seed=args.seed, device="cpu",
            lr=3e-3, log_every=max(1, min(500, args.steps)))
        res = evaluate(model, guide, data.test, num_samples=args.samples, ks=(1, 5))
        results[name] = res.summary
        print(f"{name:<10} test ELBO {res.summary['elbo']:8.3f}  IWAE-5 "
              f"{res.summary['iwae_5']:8.3f}  log p(x) (IS, K={args.samples}) "
              f"{res.summary['is']:8.3f}")
    return results


if __name__ == "__main__":
    main()
