"""A Helmholtz machine on the embedded binarised digits: a sigmoid belief net (the
generative model) and a recognition network (the guide), trained by wake-sleep and by
reweighted wake-sleep.  The net has 12 latent units, so its test log-likelihood is
exact (a sum over all 4096 latent states); the script prints the exact test NLL every
``--trace-every`` steps, which also shows whether training is stable.

    python examples/helmholtz_machine.py                      # ws and rws, 3000 steps
    python examples/helmholtz_machine.py --pyro               # also Pyro's RWS
    python examples/helmholtz_machine.py --guide-update mixture --particles 10

``--pyro`` trains the same model from the same initial parameters with
``pyro.infer.ReweightedWakeSleep`` (wake-phase guide update, ``insomnia=1``), whose
importance weights are normalised over the whole minibatch instead of per data point.
"""

from __future__ import annotations

import argparse
import tempfile

import pyro
import torch
from ppl_dgm.guides import HelmholtzGuide
from ppl_dgm.models import SigmoidBeliefNet

from ppl_dgm.data import load_digits
from ppl_dgm.estimators import ReweightedWakeSleep, WakeSleep
from ppl_dgm.evaluate import log_weights
from ppl_dgm.train import fit


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--layers", default="12", help="latent widths, bottom-up, e.g. 12 or 8,4")
    p.add_argument("--particles", type=int, default=5, help="K for reweighted wake-sleep")
    p.add_argument("--ws-particles", type=int, default=1, help="wake samples for wake-sleep")
    p.add_argument("--guide-update", default="wake", choices=["wake", "sleep", "mixture"])
    p.add_argument("--mixture-weight", type=float, default=0.5)
    p.add_argument("--dream-batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--estimators", default="ws,rws", help="comma-separated: ws, rws")
    p.add_argument("--pyro", action="store_true", help="also train with Pyro's RWS")
    p.add_argument("--trace-every", type=int, default=500,
                   help="steps between exact test NLL read-outs")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (the nets are tiny: more threads only add overhead)")
    return p.parse_args(argv)


def _build(args):
    torch.manual_seed(args.seed)  # the same initial parameters for every estimator
    model = SigmoidBeliefNet(x_dim=64, layers=args.layers)
    return model, HelmholtzGuide.from_model(model)


def _nll(model, x) -> float:
    return -float(model.log_prob(x).mean())


def _ess(model, guide, x, k: int) -> tuple[float, float]:
    """Mean effective sample size of K importance weights normalised per data point,
    and of the weights normalised over the whole batch (Pyro's RWS)."""
    with torch.no_grad(), pyro.validation_enabled(False):
        lw = log_weights(model, guide, x, k)                       # (K, N)
    per_point = 1.0 / (torch.softmax(lw, 0) ** 2).sum(0)
    batch = 1.0 / (torch.softmax(lw.sum(1), 0) ** 2).sum()
    return float(per_point.mean()), float(batch)


def _train_ours(args, estimator, data) -> dict:
    model, guide = _build(args)
    trace = []
    every = max(1, min(args.trace_every, args.steps))
    with tempfile.TemporaryDirectory() as run_dir:
        # Train in stages that resume exactly from a checkpoint, reading the exact test
        # NLL between stages.
        for stop in [*range(every, args.steps, every), args.steps]:
            fit(model, guide, estimator, data, steps=stop, batch_size=args.batch_size,
                lr=args.lr, seed=args.seed, device="cpu", run_dir=run_dir, resume=True,
                log_every=every, checkpoint_every=every)
            trace.append((stop, _nll(model, data.test)))
    return {"model": model, "guide": guide, "trace": trace}


def _train_pyro(args, data) -> dict:
    from pyro.infer import ReweightedWakeSleep as PyroRWS

    model, guide = _build(args)
    rws = PyroRWS(num_particles=args.particles, insomnia=1.0, max_plate_nesting=1)
    params = [*model.parameters(), *guide.parameters()]
    opt = torch.optim.Adam(params, lr=args.lr)
    x, b = data.train, args.batch_size
    per_epoch = x.shape[0] // b
    gen = torch.Generator().manual_seed(args.seed)
    every = max(1, min(args.trace_every, args.steps))
    trace = []
    torch.manual_seed(args.seed)
    with pyro.validation_enabled(False):
        for step in range(args.steps):
            if step % per_epoch == 0:
                order = torch.randperm(x.shape[0], generator=gen)
            i = step % per_epoch
            opt.zero_grad()
            rws.loss_and_grads(model, guide, x[order[i * b:(i + 1) * b]])
            opt.step()
            if (step + 1) % every == 0 or step + 1 == args.steps:
                trace.append((step + 1, _nll(model, data.test)))
    return {"model": model, "guide": guide, "trace": trace}


def main(argv=None) -> dict[str, dict]:
    args = _parse(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args) -> dict[str, dict]:
    data = load_digits()
    estimators = {
        "ws": lambda: WakeSleep(num_particles=args.ws_particles,
                                dream_batch_size=args.dream_batch_size),
        "rws": lambda: ReweightedWakeSleep(num_particles=args.particles,
                                           guide_update=args.guide_update,
                                           mixture_weight=args.mixture_weight,
                                           dream_batch_size=args.dream_batch_size),
    }
    names = [n.strip() for n in args.estimators.split(",") if n.strip()]
    unknown = [n for n in names if n not in estimators]
    if unknown:
        raise SystemExit(f"unknown estimator(s) {unknown}; choose from {sorted(estimators)}")
    runs = {}
    for name in names:
        label = name if name == "ws" else f"rws-k{args.particles}-{args.guide_update}"
        runs[label] = _train_ours(args, estimators[name](), data)
    if args.pyro:
        runs[f"pyro-rws-k{args.particles}"] = _train_pyro(args, data)

    print(f"SBN 64-{args.layers} + recognition net on binarised digits, {args.steps} steps "
          f"of {args.batch_size}, Adam lr {args.lr}, seed {args.seed}; exact NLL, nats/digit")
    results = {}
    for label, run in runs.items():
        model, guide = run["model"], run["guide"]
        model.eval(), guide.eval()
        torch.manual_seed(args.seed)
        ess_point, ess_batch = _ess(model, guide, data.train[:args.batch_size], args.particles)
        results[label] = {"test_nll": run["trace"][-1][1], "train_nll": _nll(model, data.train),
                          "trace": run["trace"], "ess_per_point": ess_point,
                          "ess_batch": ess_batch}
        r = results[label]
        print(f"  {label:<22} test {r['test_nll']:7.3f}  train {r['train_nll']:7.3f}  "
              f"ESS of K={args.particles}: per point {ess_point:.2f}, whole batch "
              f"{ess_batch:.2f}")
        print("      test NLL by step: " + "  ".join(f"{s}: {v:.2f}" for s, v in run["trace"]))
    return results


if __name__ == "__main__":
    main()
