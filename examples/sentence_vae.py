"""Posterior collapse and its cures on the embedded corpus (Bowman et al. 2015).

Trains the same sentence VAE (GRU, z_dim 16) from the same initial parameters with the
ELBO four ways -- plain, logistic KL annealing, word dropout, both -- and prints for
each the held-out KL term, reconstruction term, ELBO, importance-sampled log p(x), both
perplexities and the active latent units; then greedy samples from the prior and a
homotopy between two test sentences from the last model.

    python examples/sentence_vae.py --steps 3000 --samples 1000
"""

from __future__ import annotations

import argparse

import torch
from ppl_dgm.guides import SentenceEncoder
from ppl_dgm.models import SentenceVAE

from ppl_dgm.estimators import ELBO
from ppl_dgm.sentences import homotopy_report, sample_report, sentence_metrics
from ppl_dgm.text import load_text
from ppl_dgm.train import fit

CONFIGS = {
    "plain": {},
    "anneal": {"kl_anneal": "logistic"},
    "dropout": {"word_dropout": 0.5},
    "anneal+dropout": {"kl_anneal": "logistic", "word_dropout": 0.5},
}
HOMOTOPY = ("the dog happily chased the ball in the garden .",
            "it was a dreadful day and the storm hit the coast all night .")


def main(argv=None) -> dict[str, dict]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--anneal-steps", type=int, default=None, help="default: steps / 2")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--samples", type=int, default=1000, help="importance samples per sentence")
    p.add_argument("--test", type=int, default=None, help="evaluate the first N test sentences")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--z-dim", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no samples or homotopy")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_text()
    test = data.test[:args.test] if args.test else data.test
    anneal = args.anneal_steps or max(1, args.steps // 2)
    print(f"data: {data.description}")
    results = {}
    for name in args.configs.split(","):
        options = dict(CONFIGS[name])
        if "kl_anneal" in options:
            options["anneal_steps"] = anneal
        torch.manual_seed(args.seed)  # the same initial parameters for every config
        model = SentenceVAE(x_dim=data.x_dim, vocab_size=len(data.vocab), z_dim=args.z_dim,
                            hidden_dim=args.hidden, **options)
        guide = SentenceEncoder.from_model(model, hidden_dim=args.hidden)
        run = fit(model, guide, ELBO(), data, steps=args.steps, batch_size=args.batch_size,
                  seed=args.seed, log_every=max(1, min(500, args.steps)), device="cpu")
        model.eval(), guide.eval()
        torch.manual_seed(args.seed)
        m = sentence_metrics(model, guide, test, num_samples=args.samples)
        results[name] = {**m.as_dict(), "seconds": run.seconds, "options": options}
        print(f"{name:<15} KL {m.kl:6.2f}  recon {m.reconstruction:8.2f}  ELBO {m.elbo:8.2f}  "
              f"IS log p(x) {m.log_px_is:8.2f}  ppl IS {m.perplexity_is:6.2f}  ppl ELBO "
              f"{m.perplexity_elbo:6.2f}  active units {m.active_units}/{args.z_dim}  "
              f"({run.seconds:.0f} s)", flush=True)
        if not args.quiet:
            torch.manual_seed(args.seed)
            results[name]["samples"] = sample_report(model, data, n=5, greedy=True)
            results[name]["homotopy"] = homotopy_report(model, guide, data, *HOMOTOPY, steps=5)
            for line in results[name]["samples"]:
                print(f"    sample: {line}")
            for line in results[name]["homotopy"]:
                print(f"    {line}")
    return results


if __name__ == "__main__":
    main()
