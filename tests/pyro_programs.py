"""Small Pyro programs written the ordinary Pyro way (functions with ``pyro.param`` and
``pyro.module``, their own site and plate names), one per language feature, for the
validity matrix (tests/test_valid_programs.py).

Each entry of :data:`PROGRAMS` is ``name -> (model, guide, data, refusal)``: ``data``
is the training tensor (or None for a program without data); ``refusal`` is None when
every estimator that handles the latents should train the pair, or a substring that a
refusal must contain (the site or plate it names).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.testing.fakes import NonreparameterizedNormal
from torch import nn
from torch.distributions import constraints

N, D = 12, 3
_g = torch.Generator().manual_seed(0)
REAL = torch.randn(N, D, generator=_g)
BINARY = (torch.rand(N, D, generator=_g) < 0.4).float()


def _loc(name, shape):
    return pyro.param(name, lambda: 0.1 * torch.randn(shape))


def _scale(name, shape):
    return pyro.param(name, lambda: torch.ones(shape), constraint=constraints.positive)


# --------------------------------------------------------------------------- continuous
def gauss_model(data):
    with pyro.plate("obs", data.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        w = _loc("w", (2, D))
        pyro.sample("y", dist.Normal(z @ w, 1.0).to_event(1), obs=data)


def gauss_guide(data):
    a = _loc("a", (D, 2))
    s = _scale("s", (2,))
    with pyro.plate("obs", data.shape[0]):
        pyro.sample("z", dist.Normal(data @ a, s).to_event(1))


# a network registered with pyro.module (the VAE tutorial's form)
_dec, _enc = nn.Linear(2, D), nn.Linear(D, 4)


def module_model(data):
    pyro.module("dec", _dec)
    with pyro.plate("points", len(data)):
        z = pyro.sample("code", dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1))
        pyro.sample("pix", dist.Normal(_dec(z), 1.0).to_event(1), obs=data)


def module_guide(data):
    pyro.module("enc", _enc)
    with pyro.plate("points", len(data)):
        loc, raw = _enc(data).chunk(2, -1)
        pyro.sample("code", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))


def nested_model(data):
    with pyro.plate("rows", data.shape[0], dim=-2), pyro.plate("cols", data.shape[1], dim=-1):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(z, 1.0), obs=data)


def nested_guide(data):
    c = _loc("c", ())
    with pyro.plate("rows", data.shape[0], dim=-2), pyro.plate("cols", data.shape[1], dim=-1):
        pyro.sample("z", dist.Normal(c * data, 0.8))


def sequential_model(data):
    for i in pyro.plate("seq", data.shape[1]):
        z = pyro.sample(f"z_{i}", dist.Normal(0.0, 1.0).expand([data.shape[0]]).to_event(1))
        pyro.sample(f"y_{i}", dist.Normal(z, 1.0).to_event(1), obs=data[:, i])


def sequential_guide(data):
    c = _loc("c", ())
    for i in pyro.plate("seq", data.shape[1]):
        pyro.sample(f"z_{i}", dist.Normal(c * data[:, i], 0.8).to_event(1))


def subsample_model(data):
    with pyro.plate("data", N, subsample_size=4) as idx:
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
        pyro.sample("y", dist.Normal(z, 1.0).to_event(1), obs=data[idx])


def subsample_guide(data):
    c = _loc("c", ())
    with pyro.plate("data", N, subsample_size=4) as idx:
        pyro.sample("z", dist.Normal(c * data[idx], 0.8).to_event(1))


def dynamic_model(data):
    for i in pyro.plate("seq", data.shape[1], subsample_size=2):
        z = pyro.sample(f"z_{i}", dist.Normal(0.0, 1.0).expand([data.shape[0]]).to_event(1))
        pyro.sample(f"y_{i}", dist.Normal(z, 1.0).to_event(1), obs=data[:, i])


def dynamic_guide(data):
    c = _loc("c", ())
    for i in pyro.plate("seq", data.shape[1], subsample_size=2):
        pyro.sample(f"z_{i}", dist.Normal(c * data[:, i], 0.8).to_event(1))


def scale_model(data):
    with pyro.plate("obs", len(data)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
        with poutine.scale(scale=0.5):
            pyro.sample("y", dist.Normal(z, 1.0).to_event(1), obs=data)


def mask_model(data):
    mask = torch.arange(len(data)) % 3 != 0
    with pyro.plate("obs", len(data)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
        with poutine.mask(mask=mask):
            pyro.sample("y", dist.Normal(z, 1.0).to_event(1), obs=data)


def factor_model(data):
    with pyro.plate("obs", len(data)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
        pyro.factor("penalty", -0.1 * (z ** 2).sum(-1))
        pyro.sample("y", dist.Normal(z, 1.0).to_event(1), obs=data)


def obs_mask_model(data):
    observed = torch.arange(len(data)) % 4 != 0      # every fourth point is missing
    with pyro.plate("obs", len(data)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
        pyro.sample("y", dist.Normal(z, 1.0).to_event(1), obs=data, obs_mask=observed)


def local_guide(data):
    c = _loc("c", ())
    with pyro.plate("obs", len(data)):
        pyro.sample("z", dist.Normal(c * data, 0.8).to_event(1))


def obs_mask_guide(data):
    c = _loc("c", ())
    with pyro.plate("obs", len(data)):
        pyro.sample("z", dist.Normal(c * data, 0.8).to_event(1))
        # the missing points are a latent of the model (its site "y_unobserved")
        pyro.sample("y_unobserved", dist.Normal(torch.zeros_like(data), 1.0).to_event(1))


def global_model(data):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("obs", len(data)):
        z = pyro.sample("z", dist.Normal(mu, 1.0).expand([D]).to_event(1))
        pyro.sample("y", dist.Normal(z, 1.0).to_event(1), obs=data)


def global_guide(data):
    pyro.sample("mu", dist.Normal(_loc("m", ()), _scale("ms", ())))
    local_guide(data)


def aux_guide(data):
    global_guide(data)
    pyro.sample("helper", dist.Normal(0.0, 1.0), infer={"is_auxiliary": True})


def ml_model(data):
    loc = _loc("loc", (D,))
    with pyro.plate("obs", len(data)):
        pyro.sample("y", dist.Normal(loc, 1.0).to_event(1), obs=data)


def empty_guide(data):
    pass


def no_data_model():
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    pyro.factor("target", -0.5 * (z - 1.0) ** 2 * 4.0)


def no_data_guide():
    pyro.sample("z", dist.Normal(_loc("zl", ()), _scale("zs", ())))


# --------------------------------------------------------------------------- discrete
def bern_model(data):
    w = _loc("w", (2, D))
    with pyro.plate("obs", data.shape[0]):
        h = pyro.sample("h", dist.Bernoulli(0.5 * torch.ones(2)).to_event(1))
        pyro.sample("y", dist.Bernoulli(logits=h @ w).to_event(1), obs=data)


def bern_guide(data):
    v = _loc("v", (D, 2))
    with pyro.plate("obs", data.shape[0]):
        pyro.sample("h", dist.Bernoulli(logits=data @ v).to_event(1))


def nonvec_guide(data):
    """Not vectorisable: concatenates the data with a sample."""
    v = _loc("v", (D, 2))
    u = _loc("u", (D + 2, 2))
    with pyro.plate("obs", data.shape[0]):
        h = pyro.sample("h", dist.Bernoulli(logits=data @ v).to_event(1))
        pyro.sample("h2", dist.Bernoulli(logits=torch.cat([data, h], -1) @ u).to_event(1))


def nonvec_model(data):
    w = _loc("w", (2, D))
    with pyro.plate("obs", data.shape[0]):
        pyro.sample("h", dist.Bernoulli(0.5 * torch.ones(2)).to_event(1))
        h2 = pyro.sample("h2", dist.Bernoulli(0.5 * torch.ones(2)).to_event(1))
        pyro.sample("y", dist.Bernoulli(logits=h2 @ w).to_event(1), obs=data)


def nonreparam_model(data):
    with pyro.plate("obs", data.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
        pyro.sample("y", dist.Normal(z, 1.0).to_event(1), obs=data)


def nonreparam_guide(data):
    c = _loc("c", ())
    with pyro.plate("obs", data.shape[0]):
        pyro.sample("z", NonreparameterizedNormal(c * data, 0.8).to_event(1))


def enum_model(data):
    w = _loc("w", (2, D))
    with pyro.plate("obs", data.shape[0]):
        c = pyro.sample("c", dist.Categorical(torch.ones(2) / 2),
                        infer={"enumerate": "parallel"})
        pyro.sample("y", dist.Normal(w[c], 1.0).to_event(1), obs=data)


def class_guide(data):
    v = _loc("v", (D, 2))
    with pyro.plate("obs", data.shape[0]):
        pyro.sample("c", dist.Categorical(logits=data @ v))


PROGRAMS = {
    "gaussian": (gauss_model, gauss_guide, REAL, None),
    "pyro.module": (module_model, module_guide, REAL, None),
    "nested plates": (nested_model, nested_guide, REAL, None),
    "sequential plate": (sequential_model, sequential_guide, REAL, None),
    "subsampled plate": (subsample_model, subsample_guide, REAL, None),
    "changing site names": (dynamic_model, dynamic_guide, REAL, None),
    "poutine.scale": (scale_model, local_guide, REAL, None),
    "poutine.mask": (mask_model, local_guide, REAL, None),
    "obs_mask": (obs_mask_model, obs_mask_guide, REAL, None),
    "pyro.factor": (factor_model, local_guide, REAL, None),
    "global latent": (global_model, global_guide, REAL, None),
    "auxiliary guide site": (global_model, aux_guide, REAL, None),
    "no guide sites": (ml_model, empty_guide, REAL, None),
    "no data": (no_data_model, no_data_guide, None, None),
    "discrete latent": (bern_model, bern_guide, BINARY, None),
    "non-vectorisable guide": (nonvec_model, nonvec_guide, BINARY, None),
    "non-reparameterised continuous": (nonreparam_model, nonreparam_guide, REAL, None),
    # a site the guide samples: the mark only matters to enumerating ELBOs (as in Pyro)
    "enumeration mark": (enum_model, class_guide, REAL, None),
    # a site left to be summed out: refused by name, not silently drawn from the prior
    "enumerated, not in guide": (enum_model, empty_guide, REAL, "'c'"),
}
