"""A two-layer deep exponential family with Gamma latents (Ranganath et al. 2015), after
Pyro's sparse-gamma-DEF example, on small synthetic counts: global weight matrices and
local per-document factors, written the ordinary Pyro way (plain functions with
``pyro.param``, a mean-field guide that is not amortised).

    w_top ~ Gamma,  w_bottom ~ Gamma                      (global)
    z_top[i] ~ Gamma(a, b),  z_mid[i] ~ Gamma(a, b / (z_top[i] w_top))
    x[i] ~ Poisson(z_mid[i] w_bottom)                     (per document i)

With global latents the importance weights are joint over the data set, so IWAE and
RWS weigh whole data sets (P = 1), and each step uses every document.

Under a vectorised particle plate ``z_top @ w_top`` broadcasts a global ``(K, 1, ...)``
sample against a local ``(K, N, ...)`` one into ``(K, K, N, ...)``: the program is not
vectorisable (Pyro's ``Trace_ELBO(num_particles=20, vectorize_particles=True)`` returns
about 20 times the loss here, silently).  ppl_dgm's trial run sees the extra dimension and
runs the particles one by one, with a warning.

    python examples/sparse_gamma_def.py --steps 1500
    ppl-dgm compare --model examples/sparse_gamma_def.py:model \\
        --guide examples/sparse_gamma_def.py:guide --data runs/def_counts.npz \\
        --estimators elbo,iwae,rws --batch-size 40 --steps 1000 --seeds 2 --out runs/def
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from ppl_dgm.data import Dataset
from ppl_dgm.estimators import ELBO, IWAE, ReweightedWakeSleep
from ppl_dgm.train import fit

NUM_DOCS, VOCAB, TOP, MID = 40, 30, 3, 5
ALPHA_Z, BETA_Z, ALPHA_W, BETA_W = 0.5, 0.5, 0.3, 0.3


def counts(seed: int = 0) -> torch.Tensor:
    """Synthetic word counts from sparse positive factors (fixed seed)."""
    g = torch.Generator().manual_seed(seed)
    w_top = torch.rand(TOP, MID, generator=g) + 0.1
    w_bottom = (torch.rand(MID, VOCAB, generator=g) < 0.3).float() * 2.0 + 0.05
    z_top = torch.rand(NUM_DOCS, TOP, generator=g) + 0.2
    rate = (z_top @ w_top) @ w_bottom
    return torch.poisson(rate, generator=g)


def model(x):
    w_top = pyro.sample("w_top", dist.Gamma(ALPHA_W, BETA_W).expand([TOP, MID]).to_event(2))
    w_bottom = pyro.sample("w_bottom", dist.Gamma(ALPHA_W, BETA_W).expand([MID, VOCAB])
                           .to_event(2))
    with pyro.plate("documents", x.shape[0]):
        z_top = pyro.sample("z_top", dist.Gamma(ALPHA_Z, BETA_Z).expand([TOP]).to_event(1))
        z_mid = pyro.sample("z_mid", dist.Gamma(ALPHA_Z, BETA_Z / (z_top @ w_top))
                            .to_event(1))
        pyro.sample("obs", dist.Poisson(z_mid @ w_bottom + 1e-3).to_event(1), obs=x)


def _gamma(name, shape):
    alpha = pyro.param(f"{name}_alpha", lambda: torch.full(shape, 1.0),
                       constraint=constraints.greater_than(0.05))
    rate = pyro.param(f"{name}_rate", lambda: torch.full(shape, 1.0),
                      constraint=constraints.greater_than(0.05))
    return dist.Gamma(alpha, rate)


def guide(x):
    pyro.sample("w_top", _gamma("w_top", (TOP, MID)).to_event(2))
    pyro.sample("w_bottom", _gamma("w_bottom", (MID, VOCAB)).to_event(2))
    with pyro.plate("documents", x.shape[0]):
        pyro.sample("z_top", _gamma("z_top", (x.shape[0], TOP)).to_event(1))
        pyro.sample("z_mid", _gamma("z_mid", (x.shape[0], MID)).to_event(1))


def dataset() -> Dataset:
    x = counts()
    return Dataset(name="def-counts", train=x, test=x[:0], binary=False,
                   description=f"{NUM_DOCS} synthetic documents x {VOCAB} word counts")


def main(argv=None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-data", default=None, help="write the counts to FILE.npz")
    args = p.parse_args(argv)
    data = dataset()
    if args.save_data:
        Path(args.save_data).parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.save_data, train=data.train.numpy(), test=data.train.numpy())
    results = {}
    for name, est in (("elbo", ELBO()), ("iwae-5", IWAE(num_particles=5)),
                      ("rws-5", ReweightedWakeSleep(num_particles=5))):
        pyro.clear_param_store()
        r = fit(model, guide, est, data, steps=args.steps, batch_size=NUM_DOCS, lr=0.02,
                seed=args.seed, device="cpu", log_every=max(1, min(100, args.steps)))
        with torch.no_grad():
            elbo = -ELBO(num_particles=20).loss(model, guide, data.train)
        results[name] = elbo / NUM_DOCS
        print(f"{name:<7} final training objective {r.final['objective'] / NUM_DOCS:9.3f}  "
              f"ELBO (20 draws) {elbo / NUM_DOCS:9.3f} nats per document")
    return results


if __name__ == "__main__":
    main()
