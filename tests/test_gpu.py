"""CUDA checks (skipped without a GPU): every estimator trains on the device, every
tensor stays there, and the inner step never synchronises with the host."""

import pytest
import torch

from ppl_dgm import registry
from ppl_dgm.checks import check_setup
from ppl_dgm.data import load_digits
from ppl_dgm.train import StepFunction, fit, make_optimizer

pytestmark = pytest.mark.gpu


# estimators of energy-based (undirected) models, and the model each trains
_ENERGY_MODELS = {"mf-pcd": "dbm", "greedy": "dbn", "updown": "dbn"}


def _model_for(est_cls) -> str:
    if getattr(est_cls, "handles_energy_sites", False):
        return _ENERGY_MODELS.get(est_cls.name, "rbm")
    if not est_cls.needs_likelihood:
        return "generator"
    if est_cls.handles_discrete_latents and "sbn" in registry.MODELS:
        return "sbn"
    return "vae"


def _build(name):
    torch.manual_seed(0)
    est_cls = registry.ESTIMATORS[name]
    model_name = _model_for(est_cls)
    if model_name not in registry.MODELS:
        pytest.skip(f"no model {model_name!r} registered for {name}")
    model = registry.build_model(model_name, x_dim=64)
    guide = registry.build_guide(registry.default_guide(model_name), model)
    kwargs = {"num_particles": max(2, est_cls.min_particles)} if est_cls.min_particles > 1 else {}
    try:
        estimator = registry.build_estimator(name, options=kwargs)
    except (TypeError, ValueError) as e:
        pytest.skip(f"{name} needs options: {e}")
    return model, guide, estimator


def _tensors(model, guide, estimator, optimizer):
    for m in (model, guide, estimator):
        yield from m.state_dict().values()
    for state in optimizer.state.values():
        yield from (v for v in state.values() if isinstance(v, torch.Tensor))


@pytest.mark.parametrize("name", sorted(registry.ESTIMATORS))
def test_estimator_trains_on_cuda_and_stays_there(name, tmp_path):
    model, guide, estimator = _build(name)
    data = load_digits()
    res = fit(model, guide, estimator, data, steps=20, batch_size=100, device="cuda",
              log_every=10, run_dir=tmp_path)
    assert len(res.history) == 2
    for t in (list(model.parameters()) + list(guide.parameters())
              + list(estimator.aux.state_dict().values())):
        assert t.device.type == "cuda"


def _steps_without_sync(model, guide, estimator, x):
    """A warm-up step, then three under ``set_sync_debug_mode("error")``: (loss, optimiser)."""
    dev = x.device
    modules = {"model": model, "guide": guide, "estimator": estimator}
    for m in modules.values():
        m.to(dev)
    check_setup(model, guide, estimator, x)
    opt = make_optimizer(modules, device=dev)
    step = StepFunction(model, guide, estimator, opt)
    import pyro
    with pyro.validation_enabled(False):
        step(x, 0)  # warm-up: lazy initialisation may synchronise once
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for i in range(1, 4):
                loss, metrics = step(x, i)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return loss, opt


@pytest.mark.parametrize("name", sorted(registry.ESTIMATORS))
def test_inner_step_has_no_host_sync(name):
    model, guide, estimator = _build(name)
    x = load_digits().train[:100].to(torch.device("cuda"))
    loss, opt = _steps_without_sync(model, guide, estimator, x)
    assert torch.isfinite(loss).item()
    assert all(t.device.type == "cuda" for t in _tensors(model, guide, estimator, opt))


@pytest.mark.parametrize("name,opts", [("nade", {}), ("made", {"num_masks": 4}),
                                       ("made-vae", {"num_masks": 2})])
def test_autoregressive_step_has_no_host_sync(name, opts):
    """MADE's per-step mask draw and the autoregressive site stay on the device."""
    model = registry.build_model(name, x_dim=64, options=opts)
    guide = registry.build_guide(registry.default_guide(name), model)
    estimator = registry.build_estimator("iwae", options={"num_particles": 2})
    x = load_digits().train[:100].to(torch.device("cuda"))
    loss, _ = _steps_without_sync(model, guide, estimator, x)
    assert torch.isfinite(loss).item()
