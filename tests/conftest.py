import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _fresh_state():
    """Every test starts from a fixed seed, an empty param store and validation on."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(True):
        yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
