"""Undirected models on the embedded binarised digits: RBMs (CD-1, PCD, scikit-learn's
BernoulliRBM), a deep belief net (greedy, then up-down) and a deep Boltzmann machine
(mean-field PCD), with test log-likelihoods next to directed baselines.

    python examples/undirected_digits.py                  # everything (about 15 minutes on 2 cores)
    python examples/undirected_digits.py --epochs 5 --no-baselines --ais-temperatures 100

Reported, in nats per test digit (297 points):

* RBM with 16 hidden units: exact NLL (2^16 hidden states enumerated) after CD-1 and
  PCD, and scikit-learn's ``BernoulliRBM`` trained for the same number of epochs,
  its weights evaluated by the same exact enumeration;
* RBM with 100 hidden units, PCD: NLL with ``log Z`` by AIS (``--ais-temperatures`` x
  ``--ais-runs``) and its spread (three standard errors over the runs);
* DBN: the importance-sampled lower bound on ``log p(x)`` (K = ``--eval-samples``,
  bottom-up guide as proposal; top RBM's ``log Z`` exact or AIS) after greedy training
  and after up-down fine-tuning;
* DBM: the mean-field bound of Salakhutdinov and Hinton and the importance-sampled
  bound with the mean-field posterior as proposal, ``log Z`` by AIS;
* baselines: factorised Bernoulli (exact), a 12-latent SBN trained by reweighted
  wake-sleep (exact NLL), a 64-200-8 VAE (importance sampling, K = 1000).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from ppl_dgm.guides import DBMMeanField, DBNGuide, EmptyGuide, GaussianEncoder, HelmholtzGuide
from ppl_dgm.models import DBM, DBN, RBM, VAE, SigmoidBeliefNet

from ppl_dgm.data import load_digits
from ppl_dgm.estimators import (
    ELBO,
    ContrastiveDivergence,
    GreedyLayerwise,
    MeanFieldPCD,
    PersistentCD,
    ReweightedWakeSleep,
    UpDown,
)
from ppl_dgm.evaluate import importance_log_likelihood
from ppl_dgm.train import fit


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=200, help="epochs for every RBM stage")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--ais-temperatures", type=int, default=10000)
    p.add_argument("--ais-runs", type=int, default=100)
    p.add_argument("--eval-samples", type=int, default=1000)
    p.add_argument("--dbn-layers", default="64,32")
    p.add_argument("--dbm-layers", default="64,32")
    p.add_argument("--sklearn-lrs", default="0.1,0.05,0.01")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def _steps(args, data, batch=None) -> int:
    return args.epochs * (data.train.shape[0] // (batch or args.batch_size))


def _fit(model, guide, est, data, steps, lr, *, batch_size, seed, optim="adam"):
    t = time.perf_counter()
    fit(model, guide, est, data, steps=steps, batch_size=batch_size, lr=lr, device="cpu",
        seed=seed, optim=optim, log_every=max(1, min(500, steps)))
    return time.perf_counter() - t


def _rbm_row(model, data, label, seconds):
    lz = model.log_partition()
    nll = -float(model.log_prob(data.test).mean())
    return {"model": label, "nll": nll, "method": lz.method, "spread": lz.spread,
            "log_z": lz.describe(), "seconds": seconds}


def _sklearn_rbm(data, args, lr):
    from sklearn.neural_network import BernoulliRBM

    t = time.perf_counter()
    sk = BernoulliRBM(n_components=16, learning_rate=lr, batch_size=10, n_iter=args.epochs,
                      random_state=args.seed).fit(data.train.numpy())
    seconds = time.perf_counter() - t
    model = RBM(64, 16)
    with torch.no_grad():
        model.layer.weight.copy_(torch.from_numpy(sk.components_.T.astype(np.float32)))
        model.layer.visible_bias.copy_(torch.from_numpy(sk.intercept_visible_.astype(np.float32)))
        model.layer.hidden_bias.copy_(torch.from_numpy(sk.intercept_hidden_.astype(np.float32)))
    return _rbm_row(model, data, f"RBM 16, sklearn BernoulliRBM (lr {lr}, batch 10)", seconds)


def _bound_row(model, guide, data, label, seconds, args, extra=None):
    torch.manual_seed(args.seed)
    lz = model.log_partition()
    ll = importance_log_likelihood(model, guide, data.test, num_samples=args.eval_samples)
    row = {"model": label, "nll": -float(ll.mean()), "method": f"IS bound K={args.eval_samples}",
           "spread": lz.spread, "log_z": lz.describe(), "seconds": seconds}
    if extra is not None:
        row["extra"] = extra
    return row


def main(argv=None) -> list[dict]:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    data = load_digits(seed=args.seed)
    ais_opts = {"ais_temperatures": args.ais_temperatures, "ais_runs": args.ais_runs}
    rows = []

    # ---- RBM 16: CD-1, PCD, scikit-learn; exact NLL.  PCD takes scikit-learn's steps
    # (SGD, batch 10; its learning_rate=0.01 multiplies the batch mean, our surrogate is
    # the batch sum, so lr=1e-3 is the same step), with 100 chains instead of 10
    for label, est, lr, batch, optim in (
            ("RBM 16, CD-1 (Adam, batch 100)", lambda: ContrastiveDivergence(k=1), 1e-2,
             args.batch_size, "adam"),
            ("RBM 16, PCD (100 chains, SGD, batch 10)", lambda: PersistentCD(num_chains=100),
             1e-3, 10, "sgd")):
        torch.manual_seed(args.seed)
        model = RBM(64, 16)
        sec = _fit(model, EmptyGuide(), est(), data, _steps(args, data, batch), lr,
                   batch_size=batch, seed=args.seed, optim=optim)
        rows.append(_rbm_row(model, data, label, sec))
    for lr in (float(v) for v in args.sklearn_lrs.split(",") if v):
        rows.append(_sklearn_rbm(data, args, lr))

    # ---- RBM 100, PCD; log Z by AIS
    torch.manual_seed(args.seed)
    model = RBM(64, 100, **ais_opts)
    sec = _fit(model, EmptyGuide(), PersistentCD(num_chains=100), data,
               _steps(args, data, 10), 1e-3, batch_size=10, seed=args.seed, optim="sgd")
    torch.manual_seed(args.seed)
    rows.append(_rbm_row(model, data, "RBM 100, PCD (100 chains, SGD, batch 10)", sec))

    # ---- DBN: greedy, then up-down
    torch.manual_seed(args.seed)
    dbn = DBN(64, args.dbn_layers, **ais_opts)
    guide = DBNGuide.from_model(dbn)
    sec = sum(_fit(dbn, guide, GreedyLayerwise(layer=layer), data, _steps(args, data), 1e-2,
                   batch_size=args.batch_size, seed=args.seed + layer)
              for layer in range(dbn.num_rbms))
    rows.append(_bound_row(dbn, guide, data, f"DBN 64-{args.dbn_layers.replace(',', '-')}, "
                           f"greedy CD-1", sec, args))
    sec = _fit(dbn, guide, UpDown(k=1), data, _steps(args, data), 1e-3,
               batch_size=args.batch_size, seed=args.seed)
    rows.append(_bound_row(dbn, guide, data, "  + up-down fine-tuning", sec, args))

    # ---- DBM: mean-field PCD
    torch.manual_seed(args.seed)
    dbm = DBM(64, args.dbm_layers, **ais_opts)
    q = DBMMeanField.from_model(dbm)
    sec = _fit(dbm, q, MeanFieldPCD(num_chains=100), data, _steps(args, data), 3e-3,
               batch_size=args.batch_size, seed=args.seed)
    mf = -float(dbm.mean_field_bound(data.test).mean())
    rows.append(_bound_row(dbm, q, data, f"DBM 64-{args.dbm_layers.replace(',', '-')}, "
                           f"mean-field PCD", sec, args, extra=f"mean-field bound {mf:.2f}"))

    # ---- baselines
    p = (data.train.sum(0) + 1) / (data.train.shape[0] + 2)
    fact = -float((data.test * p.log() + (1 - data.test) * (1 - p).log()).sum(1).mean())
    rows.append({"model": "factorised Bernoulli", "nll": fact, "method": "exact",
                 "spread": 0.0, "log_z": "-", "seconds": 0.0})
    if not args.no_baselines:
        torch.manual_seed(args.seed)
        sbn = SigmoidBeliefNet(64, (12,))
        sec = _fit(sbn, HelmholtzGuide.from_model(sbn), ReweightedWakeSleep(num_particles=5),
                   data, 3000, 3e-3, batch_size=100, seed=args.seed)
        rows.append({"model": "SBN 12, RWS K=5, 3000 steps", "method": "exact",
                     "nll": -float(sbn.log_prob(data.test).mean()), "spread": 0.0,
                     "log_z": "-", "seconds": sec})
        torch.manual_seed(args.seed)
        vae = VAE(x_dim=64, z_dim=8)
        enc = GaussianEncoder.from_model(vae)
        sec = _fit(vae, enc, ELBO(), data, 3000, 1e-3, batch_size=100, seed=args.seed)
        torch.manual_seed(args.seed)
        ll = importance_log_likelihood(vae, enc, data.test, num_samples=1000)
        rows.append({"model": "VAE 64-200-8, ELBO, 3000 steps", "method": "IS bound K=1000",
                     "nll": -float(ll.mean()), "spread": 0.0, "log_z": "-", "seconds": sec})

    print(f"test NLL on {data.description}; {args.epochs} epochs per RBM stage")
    print(f"{'model':<48} {'NLL':>8} {'+-':>6}  {'method':<18} {'train s':>7}  log Z")
    for r in rows:
        spread = f"{r['spread']:.3f}" if r["spread"] and math.isfinite(r["spread"]) else ""
        print(f"{r['model']:<48} {r['nll']:8.3f} {spread:>6}  {r['method']:<18} "
              f"{r['seconds']:7.1f}  {r['log_z']}" + (f"; {r['extra']}" if "extra" in r else ""))
    return rows


if __name__ == "__main__":
    main()
