"""Median time per CD-1 training step of an MNIST-shaped RBM (784-500): ppl_dgm's
``ContrastiveDivergence(k=1)`` through ``fit``'s step against the same step written by
hand in PyTorch (with autograd through the free energy, and with the classic
closed-form gradients), all with one Adam step on the same parameters; and the cost
of AIS per 1000 temperatures (100 runs) for the same RBM.

    python benchmarks/bench_rbm.py --device cpu --batch 100 1000 --threads 1
"""

from __future__ import annotations

import argparse
import time
import warnings

import pyro
import torch
from ppl_dgm.guides import EmptyGuide
from ppl_dgm.models import RBM
from timing import measure, ppl_dgm_step, sync

from ppl_dgm.ais import ais_log_z
from ppl_dgm.estimators import ContrastiveDivergence


def _rbm(device, visible, hidden):
    torch.manual_seed(0)
    return RBM(visible, hidden).to(device)


def _adam(params, device):
    return torch.optim.Adam(params, lr=1e-3,
                            **({"fused": True} if device.type == "cuda" else {"foreach": True}))


def hand_autograd(device, x, visible, hidden):
    """CD-1 in plain PyTorch: one Gibbs sweep from the data, autograd through
    F(v0) - F(v1)."""
    layer = _rbm(device, visible, hidden).layer
    W, b, c = layer.weight, layer.visible_bias, layer.hidden_bias
    opt = _adam([W, b, c], device)

    def free_energy(v):
        return -(v @ b) - torch.nn.functional.softplus(v @ W + c).sum(-1)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            h0 = torch.bernoulli(torch.sigmoid(x @ W + c))
            v1 = torch.bernoulli(torch.sigmoid(h0 @ W.T + b))
        (free_energy(x).sum() - free_energy(v1).sum()).backward()
        opt.step()
    return step


def hand_closed_form(device, x, visible, hidden):
    """CD-1 with the textbook gradients ``<v h>_data - <v h>_1`` (no autograd)."""
    layer = _rbm(device, visible, hidden).layer
    W, b, c = layer.weight, layer.visible_bias, layer.hidden_bias
    opt = _adam([W, b, c], device)

    def step():
        with torch.no_grad():
            p0 = torch.sigmoid(x @ W + c)
            v1 = torch.bernoulli(torch.sigmoid(torch.bernoulli(p0) @ W.T + b))
            p1 = torch.sigmoid(v1 @ W + c)
            W.grad = v1.T @ p1 - x.T @ p0
            b.grad = v1.sum(0) - x.sum(0)
            c.grad = p1.sum(0) - p0.sum(0)
        opt.step()
    return step


def ours(device, x, visible, hidden):
    model, guide = _rbm(device, visible, hidden), EmptyGuide()
    est = ContrastiveDivergence(k=1)
    est.prepare(model, guide, x[:2])
    return ppl_dgm_step(model, guide, est, x, device)


def ais_ms_per_1000(device, visible, hidden, temperatures, runs) -> float:
    layer = _rbm(device, visible, hidden).layer
    W, b, c = (p.detach() for p in (layer.weight, layer.visible_bias, layer.hidden_bias))
    with warnings.catch_warnings():  # short runs warn that they are short
        warnings.simplefilter("ignore")
        ais_log_z(W, b, c, num_temperatures=100, num_runs=runs, progress=False)   # warm-up
        sync(device)
        t = time.perf_counter()
        ais_log_z(W, b, c, num_temperatures=temperatures, num_runs=runs, progress=False)
    sync(device)
    return (time.perf_counter() - t) * 1e3 * 1000 / temperatures


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--visible", type=int, default=784)
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--ais-temperatures", type=int, default=2000)
    p.add_argument("--ais-runs", type=int, default=100)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"RBM {args.visible}-{args.hidden}, CD-1 + Adam, device {device}, torch "
          f"{torch.__version__}, threads {torch.get_num_threads()}; median ms per step over "
          f"{args.repeats} interleaved repeats")
    print(f"{'batch':>6} {'hand-autograd':>14} {'hand-closed':>12} {'ppl_dgm':>8} "
          f"{'ours/hand-autograd':>19} {'ours/hand-closed':>17}")
    torch.manual_seed(0)
    for batch in args.batch:
        x = torch.bernoulli(torch.full((batch, args.visible), 0.3)).to(device)
        with pyro.validation_enabled(False):
            t = measure({"auto": hand_autograd(device, x, args.visible, args.hidden),
                         "closed": hand_closed_form(device, x, args.visible, args.hidden),
                         "ours": ours(device, x, args.visible, args.hidden)},
                        device, args.repeats, args.warmup)
        print(f"{batch:>6} {t['auto']:14.3f} {t['closed']:12.3f} {t['ours']:8.3f} "
              f"{t['ours'] / t['auto']:19.2f} {t['ours'] / t['closed']:17.2f}")
    ms = ais_ms_per_1000(device, args.visible, args.hidden, args.ais_temperatures,
                         args.ais_runs)
    print(f"AIS log Z: {ms:.1f} ms per 1000 temperatures ({args.ais_runs} runs, "
          f"{args.visible}-{args.hidden}); 10000 temperatures take {ms * 10 / 1000:.1f} s")
    return 0


if __name__ == "__main__":
    main()
