"""Sigmoid belief networks (Neal 1992): layers of Bernoulli units, top down.

The model with ``layers=(H1, ..., HL)`` over ``D`` binary visibles is

    h_L ~ Bernoulli(sigmoid(c)),
    h_l | h_{l+1} ~ Bernoulli(sigmoid(W_l h_{l+1} + b_l))   for l = L-1, ..., 1,
    x | h_1 ~ Bernoulli(sigmoid(W_0 h_1 + b_0)),

written as a Pyro program with latent sites ``"h1"`` (next to the data) up to
``"hL"`` (the top layer) inside ``pyro.plate("data", n)``.  ``layers`` lists the
latent widths from the visibles upwards, so ``layers=(200,)`` is the "784-200" net of
the NVIL and VIMCO papers and ``layers=(200, 200)`` the "784-200-200" one.

When the latents total at most :data:`ENUMERATION_LIMIT` units, :meth:`log_prob`
sums ``p(x, h)`` over all ``2^H`` configurations exactly (in chunks, so memory stays
bounded); otherwise it raises :class:`TooManyLatentsError`, which points to importance
sampling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn
from torch.nn import functional as F

from ppl_dgm.nn import as_sizes, plate_size

__all__ = ["ENUMERATION_LIMIT", "SigmoidBeliefNet", "SyntheticSBN", "TooManyLatentsError",
           "make_synthetic"]

ENUMERATION_LIMIT = 20
"""Most latent units for which :meth:`SigmoidBeliefNet.log_prob` enumerates (2^20 configs)."""

# Elements of one (points x configurations) block in exact enumeration (~32 MB float64).
_BLOCK_ELEMENTS = 1 << 22


class TooManyLatentsError(ValueError):
    """Exact enumeration was asked for a model with too many latent units."""


class _TopPrior(nn.Module):
    """Logits of the independent Bernoulli prior on the top layer."""

    def __init__(self, size: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(size))

    def forward(self) -> torch.Tensor:
        return self.logits


def _bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``sum_i log Bernoulli(value_i; sigmoid(logits_i))`` over the last dimension."""
    return (value * logits - F.softplus(logits)).sum(-1)


class SigmoidBeliefNet(PyroModule):
    """A sigmoid belief net with any number of stochastic layers over binary data.

    :param x_dim: number of visible units (64 for 8x8 digits, 784 for MNIST).
    :param layers: latent widths from the visibles upwards, e.g. ``(12,)`` or
        ``"200,200"``.

    ``latent_dims`` maps the site names to widths, bottom-up (``{"h1": H1, ...}``);
    :class:`~ppl_dgm.guides.HelmholtzGuide` reads it to build a matching recognition
    network.

    Example::

        model = SigmoidBeliefNet(x_dim=64, layers=(12,))
        x = model.sample(16)
        log_px = model.log_prob(x)          # exact: 2^12 configurations
    """

    latent_dims: dict[str, int]
    enumeration_limit: int = ENUMERATION_LIMIT

    def __init__(self, x_dim: int = 64, layers: Sequence[int] | int | str = (12,)):
        super().__init__()
        sizes = as_sizes(layers)
        if not sizes or any(h < 1 for h in sizes):
            raise ValueError(f"layers={layers!r}: give one or more positive latent widths, "
                             f"bottom-up, e.g. layers=(200,) or layers=(200, 200)")
        if int(x_dim) < 1:
            raise ValueError(f"x_dim must be a positive number of visible units, got {x_dim}")
        self.x_dim = int(x_dim)
        self.layer_sizes = sizes
        self.likelihood = "bernoulli"
        self.sites = tuple(f"h{i + 1}" for i in range(len(sizes)))
        self.latent_dims = dict(zip(self.sites, sizes))
        below = (self.x_dim, *sizes[:-1])
        # nets[l] maps layer l+1 to the logits of layer l (layer 0 is x); nets[L] is the
        # top prior.  A PyroModule container reached by plain indexing: no pyro.module
        # statements on every step.
        self.nets = PyroModule[nn.ModuleList](
            [nn.Linear(sizes[i], below[i]) for i in range(len(sizes))] + [_TopPrior(sizes[-1])])

    # ------------------------------------------------------------------ structure
    @property
    def num_latents(self) -> int:
        """Total number of latent units."""
        return sum(self.layer_sizes)

    @property
    def can_enumerate(self) -> bool:
        """Whether :meth:`log_prob` can sum over all latent configurations."""
        return self.num_latents <= self.enumeration_limit

    def top_logits(self) -> torch.Tensor:
        return self.nets[len(self.layer_sizes)]()

    def layer_logits(self, layer: int, above: torch.Tensor) -> torch.Tensor:
        """Logits of layer ``layer`` (0 is x, 1 is h1, ...) given layer ``layer + 1``."""
        return self.nets[layer](above)

    # ------------------------------------------------------------------ program
    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        n = plate_size(x, batch_size)
        top = self.top_logits()
        with pyro.plate("data", n):
            h = pyro.sample(self.sites[-1], dist.Bernoulli(
                logits=top.expand(n, top.shape[-1])).to_event(1))
            for i in range(len(self.sites) - 2, -1, -1):
                h = pyro.sample(self.sites[i], dist.Bernoulli(
                    logits=self.layer_logits(i + 1, h)).to_event(1))
            return pyro.sample("x", dist.Bernoulli(logits=self.layer_logits(0, h)).to_event(1),
                               obs=x)

    # ------------------------------------------------------------------ densities
    def log_joint(self, x: torch.Tensor, latents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``log p(x, h)`` for given latent values (any common leading batch shape)."""
        hs = [latents[s] for s in self.sites]
        total = _bernoulli_log_prob(self.top_logits(), hs[-1])
        for i in range(len(hs) - 1):
            total = total + _bernoulli_log_prob(self.layer_logits(i + 1, hs[i + 1]), hs[i])
        return total + _bernoulli_log_prob(self.layer_logits(0, hs[0]), x)

    def _check_enumerable(self) -> None:
        if not self.can_enumerate:
            n = self.num_latents
            raise TooManyLatentsError(
                f"exact log p(x) sums over all 2^H latent configurations, but this "
                f"{type(self).__name__} has H={n} latent units (layers "
                f"{self.layer_sizes}), more than the limit of {self.enumeration_limit} "
                f"(2^{self.enumeration_limit} = {2 ** self.enumeration_limit} "
                f"configurations). Estimate log p(x) by importance sampling with a trained "
                f"guide instead: ppl_dgm.evaluate.importance_log_likelihood(model, guide, x, "
                f"num_samples=5000), or `ppl-dgm evaluate RUN_DIR`")

    def configurations(self, start: int, stop: int, *, device=None,
                       dtype=torch.float32) -> torch.Tensor:
        """Latent configurations ``start..stop-1`` of all ``2^H``, as bits ``(C, H)``."""
        codes = torch.arange(start, stop, device=device)
        shifts = torch.arange(self.num_latents, device=device)
        return ((codes.unsqueeze(-1) >> shifts) & 1).to(dtype)

    def split(self, bits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cut ``(..., H)`` bits into the layers, bottom-up: ``{"h1": ..., ...}``."""
        return dict(zip(self.sites, bits.split(list(self.layer_sizes), -1)))

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, *, block_elements: int = _BLOCK_ELEMENTS) -> torch.Tensor:
        """Exact ``log p(x)`` per data point, by enumerating every latent configuration.

        Configurations are visited in chunks and combined with a streaming logsumexp, so
        memory stays near ``block_elements`` numbers however many configurations there
        are.  Raises :class:`TooManyLatentsError` above :data:`ENUMERATION_LIMIT` units.
        """
        self._check_enumerable()
        if x.dim() != 2 or x.shape[-1] != self.x_dim:
            raise ValueError(f"x must have shape (N, {self.x_dim}), got {tuple(x.shape)}")
        ref = self.top_logits()
        x = x.to(ref.dtype)
        total = 2 ** self.num_latents
        out = []
        point_chunk = max(1, min(x.shape[0], block_elements // 256))
        for xb in x.split(point_chunk):
            chunk = max(1, min(total, block_elements // max(xb.shape[0], self.x_dim)))
            run_max = torch.full((xb.shape[0],), -math.inf, device=x.device, dtype=x.dtype)
            run_sum = torch.zeros(xb.shape[0], device=x.device, dtype=x.dtype)
            for start in range(0, total, chunk):
                hs = self.split(self.configurations(start, min(total, start + chunk),
                                                    device=x.device, dtype=x.dtype))
                log_prior = _bernoulli_log_prob(ref, hs[self.sites[-1]])
                for i in range(len(self.sites) - 1):
                    log_prior = log_prior + _bernoulli_log_prob(
                        self.layer_logits(i + 1, hs[self.sites[i + 1]]), hs[self.sites[i]])
                logits = self.layer_logits(0, hs[self.sites[0]])            # (C, D)
                log_lik = xb @ logits.T - F.softplus(logits).sum(-1)         # (N, C)
                block = log_lik + log_prior
                new_max = torch.maximum(run_max, block.max(-1).values)
                run_sum = run_sum * torch.exp(run_max - new_max) + torch.exp(
                    block - new_max.unsqueeze(-1)).sum(-1)
                run_max = new_max
            out.append(run_max + torch.log(run_sum))
        return torch.cat(out)

    @torch.no_grad()
    def posterior(self, x: torch.Tensor) -> torch.Tensor:
        """Exact posterior ``p(h | x)`` over all configurations, shape ``(N, 2^H)``
        (configuration ``c`` has bits ``configurations(c, c + 1)``).  Small models only."""
        self._check_enumerable()
        bits = self.configurations(0, 2 ** self.num_latents, device=x.device,
                                   dtype=self.top_logits().dtype)
        hs = self.split(bits)
        log_joint = self.log_joint(x.to(bits.dtype).unsqueeze(1),
                                   {k: v.unsqueeze(0) for k, v in hs.items()})
        return torch.softmax(log_joint, -1)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False, return_latents: bool = False):
        """``n`` ancestral draws of x (``mean=True``: ``P(x = 1 | h_1)``, for image grids).

        With ``return_latents=True`` returns ``(x, {"h1": ..., ...})``.
        """
        top = self.top_logits()
        h = torch.bernoulli(torch.sigmoid(top).expand(n, top.shape[-1]))
        latents = {self.sites[-1]: h}
        for i in range(len(self.sites) - 2, -1, -1):
            h = torch.bernoulli(torch.sigmoid(self.layer_logits(i + 1, h)))
            latents[self.sites[i]] = h
        probs = torch.sigmoid(self.layer_logits(0, h))
        x = probs if mean else torch.bernoulli(probs)
        return (x, latents) if return_latents else x

    # ------------------------------------------------------------------ synthetic
    @classmethod
    def random(cls, x_dim: int, layers: Sequence[int] | int | str, *, weight_scale: float = 2.0,
               bias_scale: float = 1.0, seed: int = 0) -> SigmoidBeliefNet:
        """A net with known random parameters: weights ``N(0, weight_scale^2)``, biases
        and top logits ``N(0, bias_scale^2)``, from a private generator ``seed`` (the
        global random state is left untouched)."""
        with torch.random.fork_rng(devices=[]):   # leave the global RNG as it was
            model = cls(x_dim=x_dim, layers=layers)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                scale = weight_scale if p.dim() == 2 else bias_scale
                p.copy_(scale * torch.randn(p.shape, generator=g))
        return model


@dataclass(frozen=True)
class SyntheticSBN:
    """Data drawn from a known sigmoid belief net (the truth, for recovery studies)."""

    model: SigmoidBeliefNet
    train: torch.Tensor
    test: torch.Tensor


def make_synthetic(x_dim: int = 16, layers: Sequence[int] | int | str = (4,), *,
                   num_train: int = 1000, num_test: int = 200, weight_scale: float = 2.0,
                   bias_scale: float = 1.0, seed: int = 0) -> SyntheticSBN:
    """Draw binary data from :meth:`SigmoidBeliefNet.random` with the given seed.

    Example::

        truth = make_synthetic(x_dim=16, layers=(4,), seed=1)
        exact_nll = -truth.model.log_prob(truth.test).mean()   # the best achievable
    """
    model = SigmoidBeliefNet.random(x_dim, layers, weight_scale=weight_scale,
                                    bias_scale=bias_scale, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        x = model.sample(num_train + num_test)
    return SyntheticSBN(model=model, train=x[:num_train].contiguous(),
                        test=x[num_train:].contiguous())
