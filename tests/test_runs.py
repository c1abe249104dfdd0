"""ppl_dgm.runs: run directories written by training and read back as named results."""

import json

import pytest
import torch

from ppl_dgm.checkpoints import save_checkpoint
from ppl_dgm.data import load_digits
from ppl_dgm.errors import CheckpointError
from ppl_dgm.estimators.base import Estimator
from ppl_dgm.runs import (
    CONFIG_FILE,
    BuiltRun,
    LoadedRun,
    build_from_config,
    default_run_dir,
    load_run,
    start_run_dir,
)

CONFIG = {"model": "vae", "model_options": {"z_dim": 2, "hidden": [8]}, "guide": "gaussian",
          "guide_options": {"hidden": [8]}, "estimator": "iwae",
          "estimator_options": {"num_particles": 2}, "data": "digits", "data_root": None,
          "seed": 0}


def test_build_from_config_is_a_named_result():
    built = build_from_config(CONFIG, load_digits())
    assert isinstance(built, BuiltRun) and isinstance(built.estimator, Estimator)
    assert built.estimator.num_particles == 2


def test_start_run_dir_refuses_then_replaces(tmp_path):
    run = start_run_dir(tmp_path / "r", CONFIG)
    assert json.loads((run / CONFIG_FILE).read_text()) == CONFIG
    (run / "other").write_text("x")
    with pytest.raises(FileExistsError, match="already exists"):
        start_run_dir(run, CONFIG)
    start_run_dir(run, CONFIG, resume=True)
    assert (run / "other").exists()
    start_run_dir(run, CONFIG, overwrite=True)
    assert not (run / "other").exists()
    assert default_run_dir("path/my_model.py:MyModel", "elbo", 3).as_posix() == \
        "runs/mymodel-elbo-s3"


def test_load_run_applies_the_checkpoint(tmp_path):
    data = load_digits()
    torch.manual_seed(0)
    built = build_from_config(CONFIG, data)
    with torch.no_grad():
        for p in built.model.parameters():
            p.fill_(0.25)
    run_dir = start_run_dir(tmp_path / "r", CONFIG)
    save_checkpoint(run_dir, 7, modules={"model": built.model, "guide": built.guide,
                                         "estimator": built.estimator})
    run = load_run(run_dir)
    assert isinstance(run, LoadedRun) and run.checkpoint.step == 7 and run.config == CONFIG
    assert all(torch.all(p == 0.25) for p in run.model.parameters())
    assert not run.model.training and not run.guide.training
    with pytest.raises(CheckpointError, match="not a run directory"):
        load_run(tmp_path / "nothing")
