"""Data-parallel runs for tests/test_distributed.py, launched by torchrun.

``python -m torch.distributed.run --standalone --nproc_per_node=2 tests/dp_programs.py
OUT_DIR SCENARIO...`` trains each scenario's model in turn on every rank and saves each
rank's final state to ``OUT_DIR/SCENARIO-rank{r}.pt``.  Scenarios: ``vae`` (ELBO),
``sbn`` (NVIL, checkpoints every 10 steps), ``sbn-killed`` (rank 1 dies at step 30) and
``sbn-resume`` (resumes the killed run), ``badbatch`` (writes fit's refusal of a batch
size the world size does not divide).  The same builders serve the single-process
references in the test (:func:`build`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from ppl_dgm import registry
from ppl_dgm.data import load_digits
from ppl_dgm.train import fit

STEPS, BATCH, SEED, LR = 50, 20, 3, 3e-3
CONFIGS = {"vae": ("vae", "elbo", {"z_dim": 2, "hidden": (16,)}),
           "sbn": ("sbn", "nvil", {"layers": (8, 4)})}


def data() -> torch.Tensor:
    return load_digits().train[:200]


def build(name: str):
    """The scenario's model, guide and estimator, built from seed 0."""
    model_name, est_name, options = CONFIGS[name]
    torch.manual_seed(0)
    model = registry.build_model(model_name, x_dim=64, options=options)
    guide = registry.build_guide(registry.default_guide(model_name), model, options=None)
    est = registry.build_estimator(est_name, options={})
    return model, guide, est


def state(model, guide, est) -> dict:
    out = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    out.update({f"guide.{k}": v.detach().clone() for k, v in guide.state_dict().items()})
    out.update({f"estimator.{k}": v.detach().clone() for k, v in est.state_dict().items()})
    return out


def run(scenario: str, out_dir: Path) -> None:
    rank = int(os.environ["RANK"])
    if scenario == "badbatch":   # a global batch the world size does not divide
        model, guide, est = build("vae")
        try:
            fit(model, guide, est, data(), steps=1, batch_size=21, device="cpu")
        except ValueError as e:
            (out_dir / f"badbatch-rank{rank}.txt").write_text(str(e))
        return
    name, _, mode = scenario.partition("-")   # "sbn", "sbn-killed", "sbn-resume"
    model, guide, est = build(name)
    kw = {}
    if name == "sbn":
        kw = dict(run_dir=out_dir / f"run-{'main' if not mode else 'resumed'}",
                  log_every=10, checkpoint_every=10, resume=mode == "resume")

    def die(step, row):
        if mode == "killed" and rank == 1 and step == 30:
            os._exit(3)   # rank 1 dies before the checkpoint of step 30

    fit(model, guide, est, data(), steps=STEPS, batch_size=BATCH, lr=LR, seed=SEED,
        device="cpu", callback=die, **kw)
    torch.save(state(model, guide, est), out_dir / f"{scenario}-rank{rank}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    for scenario in sys.argv[2:]:
        run(scenario, Path(sys.argv[1]))
