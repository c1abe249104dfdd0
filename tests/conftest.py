import pyro
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The test networks are tiny: one intra-op thread is fastest, and on a busy 2-core
    machine two threads can stall each other by an order of magnitude."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
