"""Median time per MADE training step: ppl_dgm vs hand-written PyTorch vs stock Pyro SVI.

MNIST-shaped MADE (784-500-784, ReLU, the paper's single-hidden-layer net) on random
binary data, with one fixed mask set and with an order/connectivity-agnostic ensemble of
8 mask sets (one drawn per step).  Every variant uses the same masks (read from the
model) and an Adam step on the negative log-likelihood; timings are interleaved
(round-robin) so that machine noise hits all variants alike.

* hand: the masked MLP, BCE loss and Adam written directly in PyTorch;
* ppl_dgm: the step ``fit`` runs (ELBO with the empty guide: the Pyro program's site
  ``"x"`` is an AutoregressiveBernoulli);
* pyro SVI: ``pyro.infer.SVI`` with ``Trace_ELBO`` on the same program.

    python benchmarks/bench_made.py --device cpu --batch 100 1000
"""

from __future__ import annotations

import argparse

import pyro
import torch
from ppl_dgm.guides import EmptyGuide
from ppl_dgm.models import MADE
from timing import add_common_args, measure, ppl_dgm_step, start, svi_step
from torch.nn import functional as F

from ppl_dgm.estimators import ELBO


def _model(device, masks):
    torch.manual_seed(0)
    return MADE(784, (500,), num_masks=masks).to(device)


def hand_written(device, x, masks):
    """The same MADE step in plain PyTorch: masked linear layers, BCE, Adam."""
    net = _model(device, masks).net
    (w1, b1), (w2, b2) = ((layer.weight, layer.bias) for layer in net.layers)
    mask1, mask2 = net.mask0, net.mask1                  # (M, out, in), the model's masks
    opt = torch.optim.Adam([w1, b1, w2, b2], lr=1e-3,
                           **({"fused": True} if device.type == "cuda" else {"foreach": True}))

    def step():
        opt.zero_grad(set_to_none=True)
        m = torch.randint(masks, (), device=device) if masks > 1 else 0
        h = torch.relu(F.linear(x, w1 * mask1[m], b1))
        logits = F.linear(h, w2 * mask2[m], b2)
        nll = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        nll.backward()
        opt.step()
    return step


def ours(device, x, masks):
    return ppl_dgm_step(_model(device, masks), EmptyGuide(), ELBO(), x, device)


def pyro_svi(device, x, masks):
    model = _model(device, masks)
    pyro.clear_param_store()

    def model_fn(x):
        pyro.module("made", model)
        return model(x)

    def guide_fn(x):
        pass

    return svi_step(model_fn, guide_fn, pyro.infer.Trace_ELBO(), x)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_common_args(p)
    p.add_argument("--masks", type=int, nargs="+", default=[1, 8],
                   help="mask sets (1: fixed masks; >1: one drawn per step)")
    args = p.parse_args(argv)
    device = start(args, "MADE 784-500-784")
    print(f"{'batch':>6} {'masks':>6} {'hand':>8} {'ppl_dgm':>8} {'pyro SVI':>9} "
          f"{'ours/hand':>10} {'pyro/hand':>10} {'pyro/ours':>10}")
    torch.manual_seed(0)
    for batch in args.batch:
        x = torch.bernoulli(torch.full((batch, 784), 0.3)).to(device)
        for masks in args.masks:
            with pyro.validation_enabled(args.validation):
                variants = {"hand": hand_written(device, x, masks),
                            "ours": ours(device, x, masks), "pyro": pyro_svi(device, x, masks)}
                t = measure(variants, device, args.repeats, args.warmup)
            print(f"{batch:>6} {masks:>6} {t['hand']:8.3f} {t['ours']:8.3f} {t['pyro']:9.3f} "
                  f"{t['ours'] / t['hand']:10.2f} {t['pyro'] / t['hand']:10.2f} "
                  f"{t['pyro'] / t['ours']:10.2f}")


if __name__ == "__main__":
    main()
