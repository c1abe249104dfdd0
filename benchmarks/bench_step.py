"""Median time per training step: ppl_dgm vs hand-written PyTorch vs stock Pyro SVI.

MNIST-shaped VAE (784-400-20, tanh MLPs, Bernoulli likelihood) on random binary data.
Every variant uses the same networks and an Adam step; timings are interleaved
(round-robin) so that machine noise hits all variants alike.

    python benchmarks/bench_step.py --device cpu --batch 100 1000
"""

from __future__ import annotations

import argparse

import pyro
import torch
from ppl_dgm.guides import GaussianEncoder
from ppl_dgm.models import VAE
from timing import add_common_args, measure, ppl_dgm_step, start, svi_step
from torch.nn import functional as F

from ppl_dgm.estimators import ELBO, IWAE


def _nets(device):
    torch.manual_seed(0)
    model = VAE(784, 20, hidden=(400,)).to(device)
    guide = GaussianEncoder.from_model(model, hidden=(400,)).to(device)
    return model, guide


def hand_written(device, x, k):
    """The same VAE/IWAE-k step written directly in PyTorch."""
    model, guide = _nets(device)
    enc, dec = guide.encoder, model.decoder
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-3,
                           **({"fused": True} if device.type == "cuda" else {"foreach": True}))
    log2pi = torch.log(torch.tensor(2 * torch.pi, device=device))

    def step():
        opt.zero_grad(set_to_none=True)
        loc, raw = enc(x).chunk(2, -1)
        scale = F.softplus(raw) + 1e-4
        eps = torch.randn((k,) + loc.shape, device=device)
        z = loc + scale * eps
        logits = dec(z)
        log_lik = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits),
                                                      reduction="none").sum(-1)
        log_prior = -0.5 * (z**2 + log2pi).sum(-1)
        log_q = (-0.5 * (eps**2 + log2pi) - scale.log()).sum(-1)
        log_w = log_lik + log_prior - log_q
        bound = torch.logsumexp(log_w, 0) - torch.log(torch.tensor(float(k))) if k > 1 \
            else log_w[0]
        (-bound.sum()).backward()
        opt.step()
    return step


def ours(device, x, k):
    model, guide = _nets(device)
    est = ELBO() if k == 1 else IWAE(num_particles=k)
    return ppl_dgm_step(model, guide, est, x, device)


def pyro_svi(device, x, k):
    model, guide = _nets(device)
    pyro.clear_param_store()
    elbo = (pyro.infer.Trace_ELBO() if k == 1 else
            pyro.infer.RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True))

    # the standard Pyro idiom: register the networks' parameters with pyro.module
    def model_fn(x):
        pyro.module("decoder", model.decoder)
        return model(x)

    def guide_fn(x):
        pyro.module("encoder", guide.encoder)
        return guide(x)

    return svi_step(model_fn, guide_fn, elbo, x)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_common_args(p)
    args = p.parse_args(argv)
    device = start(args, "VAE 784-400-20")
    print(f"{'batch':>6} {'objective':<10} {'hand':>8} {'ppl_dgm':>8} {'pyro SVI':>9} "
          f"{'ours/hand':>10} {'pyro/hand':>10} {'pyro/ours':>10}")
    torch.manual_seed(0)
    for batch in args.batch:
        x = torch.bernoulli(torch.full((batch, 784), 0.3)).to(device)
        for k, label in ((1, "ELBO"), (5, "IWAE-5")):
            with pyro.validation_enabled(args.validation):
                variants = {"hand": hand_written(device, x, k), "ours": ours(device, x, k),
                            "pyro": pyro_svi(device, x, k)}
                t = measure(variants, device, args.repeats, args.warmup)
            print(f"{batch:>6} {label:<10} {t['hand']:8.3f} {t['ours']:8.3f} {t['pyro']:9.3f} "
                  f"{t['ours'] / t['hand']:10.2f} {t['pyro'] / t['hand']:10.2f} "
                  f"{t['pyro'] / t['ours']:10.2f}")


if __name__ == "__main__":
    main()
