"""``ppl-dgm evaluate``, ``sample`` and ``list``: read a run back and report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from .. import registry
from ..programs import generate
from ..protocol import sampler
from ..runs import load_run
from ..text import TextDataset


def say_notes(notes) -> None:
    """Print what a caller should know about a loaded run (to stderr, one line each)."""
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def _evaluate(args) -> int:
    from ..evaluate import evaluate
    from ..train import resolve_device
    from ..undirected import evaluate_lines, log_z_fields

    device = resolve_device(args.device)
    run = load_run(args.run_dir, device, trust_code=args.trust_code)
    say_notes(run.notes)
    ckpt = run.checkpoint
    x = (run.data.test if args.split == "test" else run.data.train).to(device)
    ks = tuple(args.ks)
    result = evaluate(run.model, run.guide, x, num_samples=args.samples, ks=ks)
    if args.json:
        print(json.dumps({"step": ckpt.step, "split": args.split, **result.summary,
                          **log_z_fields(run.model)}))
        return 0
    print(f"{args.run_dir} at step {ckpt.step}, {args.split} split ({x.shape[0]} points), "
          f"nats per point:")
    lines = evaluate_lines(run.model, run.guide, x, result.summary, args.samples)
    if lines is not None:  # log Z exact or by AIS, named on every line
        print("\n".join(lines))
        return 0
    for key, value in result.summary.items():
        if key != "num_samples":
            label = {"elbo": "ELBO", "is": f"log p(x), IS K={args.samples}",
                     "exact": "log p(x), exact"}.get(key, key.replace("iwae_", "IWAE K="))
            print(f"  {label:<28} {value:10.3f}")
    if isinstance(run.data, TextDataset):  # KL, reconstruction, perplexities
        from ..sentences import metric_lines
        print("\n".join(metric_lines(run.model, run.guide, x, result.per_point["is"])))
    return 0


def _sample(args) -> int:
    from ..plots import save_grid

    run = load_run(args.run_dir, trust_code=args.trust_code)
    say_notes(run.notes)
    torch.manual_seed(args.seed)
    if isinstance(run.data, TextDataset):  # sentences: printed and saved as text
        from ..sentences import text_output
        lines, name = text_output(run.model, run.guide, run.data, n=args.n, decode=args.decode,
                                  interpolate=args.interpolate, steps=args.interp_steps)
        out = Path(args.out or Path(args.run_dir) / name)
        out.write_text("\n".join(lines) + "\n")
        print("\n".join(lines) + f"\nwrote {len(lines)} lines to {out}")
        return 0
    sample = sampler(run.model)
    if sample is not None:
        x = sample(args.n, mean=not args.binary)
    else:  # any program: run it with its observed sites unconditioned
        x = generate(run.model, args.n, template=run.data.train)
    out = Path(args.out or Path(args.run_dir) / "samples.png")
    save_grid(x.cpu(), out, image_shape=run.data.image_shape)
    print(f"wrote {args.n} samples to {out}")
    return 0


def _list(_args) -> int:
    print("models:")
    for name, cls in registry.MODELS.items():
        guide = registry.DEFAULT_GUIDES.get(name, "-")
        print(f"  {name:<20} {cls.__module__}.{cls.__name__} (default guide: {guide})")
    print("guides:")
    for name, cls in registry.GUIDES.items():
        print(f"  {name:<20} {cls.__module__}.{cls.__name__}")
    print("estimators:              discrete  reparam-only  likelihood  min K  energy sites")
    for name, cls in registry.ESTIMATORS.items():
        yes = {True: "yes", False: "no"}
        print(f"  {name:<22} {yes[cls.handles_discrete_latents]:<9} "
              f"{yes[cls.needs_reparam]:<13} {yes[cls.needs_likelihood]:<11} "
              f"{cls.min_particles:<6} {yes[cls.handles_energy_sites]}")
    print("columns: discrete = trains models with discrete latent sites; reparam-only = "
          "needs every latent to be\n  reparameterisable (continuous); likelihood = needs "
          "the model's log-likelihood (no: adversarial\n  or moment-matching objectives, "
          "judged by samples); min K = the fewest particles (num_particles);\n  energy "
          "sites = trains models with energy-based (undirected) sites.  Models and guides "
          "are\n  given as --model/--guide NAME or path/to/file.py:Class; a default guide is "
          "used without --guide.")
    return 0
