"""Median time per training step of a sigmoid belief net: ppl_dgm's REINFORCE, NVIL and
VIMCO-5 against the same steps written by hand in PyTorch, and against Pyro's
TraceGraph_ELBO (REINFORCE with a decaying-average baseline; NVIL-like with a neural
baseline; Pyro has no VIMCO).

SBN 784-200 (one layer of 200 Bernoulli latents, linear Helmholtz recognition network)
on random binary data.  Every variant uses the same networks and an Adam step; timings
are interleaved (round-robin) so that machine noise hits all variants alike.

    python benchmarks/bench_sbn.py --device cpu --batch 100 1000
"""

from __future__ import annotations

import argparse

import pyro
import pyro.distributions as dist
import torch
from ppl_dgm.guides import HelmholtzGuide
from ppl_dgm.models import SigmoidBeliefNet
from timing import measure, ppl_dgm_step
from torch import nn
from torch.nn import functional as F

from ppl_dgm.estimators import NVIL, REINFORCE, VIMCO

ESTIMATORS = ("reinforce", "nvil", "vimco")


def _nets(device):
    torch.manual_seed(0)
    model = SigmoidBeliefNet(784, (200,)).to(device)
    guide = HelmholtzGuide.from_model(model).to(device)
    return model, guide


def _baseline_net(device):
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(784, 100), nn.Tanh(), nn.Linear(100, 1)).to(device)


def _adam(params, device):
    return torch.optim.Adam(params, lr=1e-3,
                            **({"fused": True} if device.type == "cuda" else {"foreach": True}))


def _bern(logits, value):
    return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)


def hand_written(device, x, name):
    """The same step written directly in PyTorch (one layer: local = global signal)."""
    model, guide = _nets(device)
    enc, dec, top = guide.nets[0], model.nets[0], model.nets[1].logits
    params = [*enc.parameters(), *dec.parameters(), top]
    base = _baseline_net(device) if name == "nvil" else None
    if base is not None:
        params += list(base.parameters())
    opt = _adam(params, device)
    k = 5 if name == "vimco" else 1
    stats = torch.zeros(3, device=device)          # mean, var, count

    def step():
        opt.zero_grad(set_to_none=True)
        logits_q = enc(x)
        h = torch.bernoulli(torch.sigmoid(logits_q).expand(k, *logits_q.shape))
        log_q = _bern(logits_q.expand_as(h), h)                            # (K, B)
        log_p = _bern(top.expand_as(h), h) + _bern(dec(h), x.expand(k, *x.shape))
        log_w = log_p - log_q
        if name == "vimco":
            lw = log_w.detach()
            loo = (lw.sum(0, keepdim=True) - lw) / (k - 1)
            eye = torch.eye(k, dtype=torch.bool, device=device).unsqueeze(-1)
            mat = torch.where(eye, loo.unsqueeze(1), lw.unsqueeze(0))
            signal = (torch.logsumexp(lw, 0) - torch.logsumexp(mat, 1))
            w = torch.softmax(lw, 0)
            loss = -((w * log_w).sum(0) + (signal * log_q).sum(0)).sum()
        else:
            signal = log_w.detach()
            seen = stats[2] > 0
            c = torch.where(seen, stats[0], torch.zeros_like(stats[0]))
            loss = 0.0
            if name == "nvil":
                b = base(x).squeeze(-1)
                loss = (signal - c - b).square().sum()
                b = b.detach()
                scale = torch.where(seen, stats[1].sqrt().clamp(min=1.0), torch.ones_like(c))
                r = signal - b
                learn = (signal - b - c) / scale
            else:
                r = signal
                learn = signal - c
            with torch.no_grad():
                a = 0.8 if name == "nvil" else 0.9
                m, v = r.mean(), r.var(unbiased=False)
                stats[0] = torch.where(seen, a * stats[0] + (1 - a) * m, m)
                stats[1] = torch.where(seen, a * stats[1] + (1 - a) * v, v)
                stats[2] += 1
            loss = loss - (log_p - log_q.detach() + learn * log_q).sum()
        loss.backward()
        opt.step()
    return step


def ours(device, x, name):
    model, guide = _nets(device)
    est = {"reinforce": lambda: REINFORCE(), "nvil": lambda: NVIL(),
           "vimco": lambda: VIMCO(num_particles=5)}[name]()
    est.to(device)
    est.prepare(model, guide, x[:2])
    return ppl_dgm_step(model, guide, est, x, device)


class _Squeeze(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).squeeze(-1)


def pyro_tracegraph(device, x, name):
    """Stock Pyro: TraceGraph_ELBO with Pyro's own baselines, pyro.module idiom."""
    if name == "vimco":
        return None
    model, guide = _nets(device)
    enc, dec, top = guide.nets[0], model.nets[0], model.nets[1]
    base = _Squeeze(_baseline_net(device)) if name == "nvil" else None
    pyro.clear_param_store()

    def model_fn(x):
        pyro.module("decoder", dec)
        pyro.module("top", top)
        with pyro.plate("data", x.shape[0]):
            h = pyro.sample("h1", dist.Bernoulli(logits=top.logits.expand(x.shape[0], 200))
                            .to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(h)).to_event(1), obs=x)

    def guide_fn(x):
        pyro.module("encoder", enc)
        if base is not None:
            pyro.module("baseline", base)
            options = {"nn_baseline": base, "nn_baseline_input": x}
        else:
            options = {"use_decaying_avg_baseline": True, "baseline_beta": 0.9}
        with pyro.plate("data", x.shape[0]):
            pyro.sample("h1", dist.Bernoulli(logits=enc(x)).to_event(1),
                        infer={"baseline": options})

    svi = pyro.infer.SVI(model_fn, guide_fn, pyro.optim.Adam({"lr": 1e-3}),
                         pyro.infer.TraceGraph_ELBO())

    def step():
        svi.step(x)
    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=ESTIMATORS)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"SBN 784-200, device {device}, torch {torch.__version__}, pyro {pyro.__version__}, "
          f"threads {torch.get_num_threads()}; median ms per step over {args.repeats} "
          f"interleaved repeats")
    print(f"{'batch':>6} {'estimator':<10} {'hand':>8} {'ppl_dgm':>8} {'TraceGraph':>11} "
          f"{'ours/hand':>10} {'pyro/hand':>10} {'pyro/ours':>10}")
    torch.manual_seed(0)
    for batch in args.batch:
        x = torch.bernoulli(torch.full((batch, 784), 0.3)).to(device)
        for name in args.estimators:
            with pyro.validation_enabled(False):
                variants = {"hand": hand_written(device, x, name), "ours": ours(device, x, name)}
                tg = pyro_tracegraph(device, x, name)
                if tg is not None:
                    variants["pyro"] = tg
                t = measure(variants, device, args.repeats, args.warmup)
            label = "vimco-5" if name == "vimco" else name
            print(f"{batch:>6} {label:<10} {t['hand']:8.3f} {t['ours']:8.3f} "
                  f"{_fmt(t, 'pyro', 11)} {t['ours'] / t['hand']:10.2f} "
                  f"{_ratio(t, 'pyro', 'hand')} {_ratio(t, 'pyro', 'ours')}")
    return 0


def _fmt(t, key, width):
    return f"{t[key]:{width}.3f}" if key in t else f"{'-':>{width}}"


def _ratio(t, a, b):
    return f"{t[a] / t[b]:10.2f}" if a in t and b in t else f"{'-':>10}"


if __name__ == "__main__":
    main()
