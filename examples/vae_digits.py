"""Train a VAE on the embedded binarised digits with the ELBO and with IWAE, and print
the bound ladder of each (test set, nats per digit).

    python examples/vae_digits.py --steps 3000 --samples 2000
"""

from __future__ import annotations

import argparse

import torch
from ppl_dgm.guides import GaussianEncoder
from ppl_dgm.models import VAE

from ppl_dgm.data import load_digits
from ppl_dgm.estimators import ELBO, IWAE
from ppl_dgm.evaluate import evaluate
from ppl_dgm.train import fit


def main(argv=None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--particles", type=int, default=5, help="K for IWAE")
    p.add_argument("--samples", type=int, default=2000, help="importance samples for log p(x)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    data = load_digits()
    results = {}
    for name, estimator in (("elbo", ELBO()), (f"iwae-{args.particles}",
                                              IWAE(num_particles=args.particles))):
        torch.manual_seed(args.seed)  # same initial parameters for both
        model = VAE(x_dim=64, z_dim=8, hidden=(200,))
        guide = GaussianEncoder.from_model(model, hidden=(200,))
        fit(model, guide, estimator, data, steps=args.steps, batch_size=args.batch_size,
            seed=args.seed, log_every=max(1, min(500, args.steps)), device="cpu")
        model.eval(), guide.eval()
        res = evaluate(model, guide, data.test, num_samples=args.samples, ks=(1, 5, 50))
        results[name] = res.summary
        print(f"{name:<8} test NLL (IS, K={args.samples}) {res.nll():7.3f}   " + "  ".join(
            f"{k} {v:.3f}" for k, v in res.summary.items() if k not in ("is", "num_samples")))
    return results


if __name__ == "__main__":
    main()
