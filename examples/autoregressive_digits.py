"""Exact-likelihood autoregressive baselines on the embedded binarised digits, next to
the latent-variable models: test NLL (nats per digit, lower is better) of

* a factorised Bernoulli (maximum likelihood, closed form; exact),
* a 12-latent sigmoid belief net trained by VIMCO (exact, by enumeration),
* a 64-200-8 VAE trained by the ELBO (importance sampling),
* NADE (Larochelle & Murray 2011; exact),
* MADE with one ordering and MADE with an ensemble of orderings, order- and
  connectivity-agnostic (Germain et al. 2015; exact, also per single ordering),
* a VAE whose decoder is a MADE conditioned on z (importance sampling),

every trained model with the same number of Adam steps and minibatch size.

    python examples/autoregressive_digits.py                 # 3000 steps (~3 minutes)
    python examples/autoregressive_digits.py --steps 10000 --masks 16
"""

from __future__ import annotations

import argparse

import torch
from ppl_dgm.guides import EmptyGuide, GaussianEncoder, HelmholtzGuide
from ppl_dgm.models import MADE, MADEVAE, NADE, VAE, SigmoidBeliefNet

from ppl_dgm.data import load_digits
from ppl_dgm.estimators import ELBO, VIMCO
from ppl_dgm.evaluate import importance_log_likelihood
from ppl_dgm.train import fit


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--masks", type=int, default=8, help="mask sets of the MADE ensemble")
    p.add_argument("--made-hidden", default="500", help="MADE widths, e.g. 500 or 300,300")
    p.add_argument("--nade-hidden", type=int, default=100)
    p.add_argument("--eval-samples", type=int, default=1000,
                   help="importance samples per test point for the VAEs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None,
                   help="comma-separated subset of: bernoulli,sbn,vae,nade,made,made-ensemble,"
                        "made-vae")
    return p.parse_args(argv)


def factorised_bernoulli_nll(train: torch.Tensor, test: torch.Tensor) -> float:
    """Test NLL of independent Bernoullis fitted by maximum likelihood (add-one smoothed,
    so that a pixel never on in training does not give log 0)."""
    p = (train.sum(0) + 1) / (train.shape[0] + 2)
    return -float((test * p.log() + (1 - test) * (1 - p).log()).sum(-1).mean())


def main(argv=None) -> dict[str, dict[str, float]]:
    args = _parse(argv)
    data = load_digits()
    x_dim, test = data.x_dim, data.test
    only = set(args.only.split(",")) if args.only else None
    rows: dict[str, dict[str, float]] = {}

    def train(name, model, guide, estimator, lr=args.lr):
        torch.manual_seed(args.seed)
        result = fit(model, guide, estimator, data, steps=args.steps,
                     batch_size=args.batch_size, lr=lr, seed=args.seed, log_every=100)
        model.eval(), guide.eval()
        return result.seconds

    def wanted(name):
        return only is None or name in only

    if wanted("bernoulli"):
        rows["factorised Bernoulli"] = {"nll": factorised_bernoulli_nll(data.train, test),
                                        "how": "exact"}
    if wanted("sbn"):
        torch.manual_seed(args.seed)
        sbn = SigmoidBeliefNet(x_dim, layers=(12,))
        secs = train("sbn", sbn, HelmholtzGuide.from_model(sbn), VIMCO(num_particles=5), 3e-3)
        with torch.no_grad():
            rows["SBN 64-12 (VIMCO, K=5)"] = {"nll": -float(sbn.log_prob(test).mean()),
                                              "how": "exact", "seconds": secs}
    for name, make in (("vae", lambda: VAE(x_dim, 8, hidden=(200,))),
                       ("made-vae", lambda: MADEVAE(x_dim, 8))):
        if not wanted(name):
            continue
        torch.manual_seed(args.seed)
        model = make()
        guide = GaussianEncoder.from_model(model)
        secs = train(name, model, guide, ELBO())
        torch.manual_seed(args.seed)
        with torch.no_grad():
            ll = importance_log_likelihood(model, guide, test, num_samples=args.eval_samples)
        label = "VAE 64-200-8 (ELBO)" if name == "vae" else "VAE, MADE decoder (ELBO)"
        rows[label] = {"nll": -float(ll.mean()), "how": f"IS K={args.eval_samples}",
                       "seconds": secs}
    if wanted("nade"):
        torch.manual_seed(args.seed)
        nade = NADE(x_dim, args.nade_hidden)
        secs = train("nade", nade, EmptyGuide(), ELBO())
        with torch.no_grad():
            rows[f"NADE H={args.nade_hidden}"] = {"nll": -float(nade.log_prob(test).mean()),
                                                 "how": "exact", "seconds": secs}
    for name, masks in (("made", 1), ("made-ensemble", args.masks)):
        if not wanted(name):
            continue
        torch.manual_seed(args.seed)
        made = MADE(x_dim, args.made_hidden, num_masks=masks)
        secs = train(name, made, EmptyGuide(), ELBO())
        with torch.no_grad():
            row = {"nll": -float(made.log_prob(test).mean()), "how": "exact", "seconds": secs}
            if masks > 1:
                single = [-float(made.log_prob(test, mask=m).mean()) for m in range(masks)]
                row["single_order_mean_nll"] = sum(single) / masks
                row["single_order_best_nll"] = min(single)
        label = (f"MADE {args.made_hidden}, 1 ordering" if masks == 1 else
                 f"MADE {args.made_hidden}, {masks} orderings (ensemble)")
        rows[label] = row
    print(f"binarised digits, test NLL in nats per digit ({test.shape[0]} test points), "
          f"{args.steps} Adam steps, batch {args.batch_size}")
    for label, row in rows.items():
        extra = ""
        if "single_order_mean_nll" in row:
            extra = (f"  (its single orderings: mean {row['single_order_mean_nll']:.2f},"
                     f" best {row['single_order_best_nll']:.2f})")
        print(f"  {label:<40} {row['nll']:7.2f}  {row['how']:<10}{extra}")
    return rows


if __name__ == "__main__":
    main()
