"""Autoregressive Bernoulli distributions: the likelihood of NADE and MADE.

An autoregressive model over ``D`` binary values factorises the joint along an ordering
``o`` (a permutation of ``0..D-1``):

    p(x) = prod_k Bernoulli(x_{o_k}; sigmoid(f(x)_{o_k})),

where the logit ``f(x)_{o_k}`` depends only on the earlier values ``x_{o_1}, ...,
x_{o_{k-1}}`` (and possibly a context such as a VAE's latent ``z``).  Given a network
``f`` with that property, one pass gives the exact ``log p(x)`` and ``D`` passes give an
ancestral draw.  :class:`AutoregressiveBernoulli` wraps such a network as a Pyro/torch
distribution, so a model observes data with ``pyro.sample("x", dist, obs=x)`` and every
estimator and evaluator of the library sees an ordinary site with an exact log density.
:class:`OrderMixture` is the uniform mixture of several of them, one per ordering (MADE's
test-time averaging over orderings, Germain et al. 2015, section 4).

Example::

    import torch
    from ppl_dgm.models.autoregressive import AutoregressiveBernoulli

    logits_fn = lambda x: torch.cat([torch.zeros_like(x[..., :1]), 2 * x[..., :-1] - 1], -1)
    d = AutoregressiveBernoulli(logits_fn, torch.arange(3))   # x_k depends on x_{k-1}
    x = d.sample((5,))                                        # shape (5, 3)
    d.log_prob(x)                                             # shape (5,)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from pyro.distributions import TorchDistribution, constraints
from torch.nn import functional as F

__all__ = ["AutoregressiveBernoulli", "OrderMixture", "bernoulli_log_prob", "check_binary"]


def bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``sum_i log Bernoulli(value_i; sigmoid(logits_i))`` over the last dimension
    (``max(l, 0) - l x + log1p(exp(-|l|))`` inside, exact also for large logits, where
    ``softplus``'s linear cut-off at 20 would lose ``exp(-20)``)."""
    logits, value = torch.broadcast_tensors(logits, value)
    return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)


def check_binary(x: torch.Tensor, x_dim: int, who: str) -> None:
    """Refuse anything but a ``(N, x_dim)`` tensor of 0/1 values, naming ``who`` and how
    to fix it (outside the training step: this reads values back to the host)."""
    if not torch.is_tensor(x) or x.dim() != 2 or x.shape[-1] != x_dim:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{who}: x must be a tensor of shape (N, {x_dim}), got {shape}")
    bad = ~((x == 0) | (x == 1)).all(-1)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten()[:5].tolist()
        raise ValueError(f"{who} is a distribution over binary vectors, but {int(bad.sum())} "
                         f"rows of x hold values other than 0 and 1 (first rows {rows}); "
                         f"binarise the data first, e.g. x = (x > 0.5).float()")


class _BinaryVectors(TorchDistribution):
    """Shared plumbing: support on binary vectors, validation, ``expand`` and ``sample``
    from the subclass's ``ancestral`` draw.  Subclasses define ``_fields`` (the
    attributes an expanded copy shares), ``_log_prob`` and ``ancestral``."""

    arg_constraints: dict = {}
    support = constraints.independent(constraints.boolean, 1)
    has_rsample = False
    _fields: tuple[str, ...] = ()

    def _expanded_field(self, name: str, batch_shape: torch.Size):
        return getattr(self, name)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        for name in self._fields:
            setattr(new, name, self._expanded_field(name, batch_shape))
        TorchDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return self._log_prob(value)

    def sample(self, sample_shape: Sequence[int] = torch.Size()) -> torch.Tensor:
        return self.ancestral(sample_shape)[0]


class AutoregressiveBernoulli(_BinaryVectors):
    """``p(x) = prod_k Bernoulli(x_{o_k}; sigmoid(logits_fn(x)_{o_k}))``.

    :param logits_fn: maps values ``(..., D)`` to logits ``(..., D)``; logit ``o_k`` must
        depend only on ``x_{o_1..o_{k-1}}`` (MADE's masks, NADE's weight sharing).  It may
        close over a context (a latent ``z``) whose batch shape is ``batch_shape``.
    :param order: the ordering ``o`` as a permutation of ``0..D-1`` (the ancestral sampler
        fills the values in this order).
    :param batch_shape: batch shape of the distribution (that of the context; ``()``
        without one: Pyro's plates then expand it).
    :param dtype: floating type of the network (that of the draws; default torch's).

    ``log_prob`` costs one call of ``logits_fn``; ``sample`` costs ``D`` calls.
    The support is binary vectors, so data checks refuse non-binary data.
    """

    _fields = ("logits_fn", "order", "rank", "dtype")

    def __init__(self, logits_fn: Callable[[torch.Tensor], torch.Tensor], order: torch.Tensor,
                 batch_shape: Sequence[int] = (), *, dtype: torch.dtype | None = None,
                 validate_args: bool | None = None):
        order = torch.as_tensor(order)
        if order.dim() != 1:
            raise ValueError(f"order must be a permutation of 0..D-1 (shape (D,)), got shape "
                             f"{tuple(order.shape)}")
        self.logits_fn = logits_fn
        self.order = order
        self.dtype = dtype or torch.get_default_dtype()
        # rank[d] = the position of variable d in the ordering
        self.rank = torch.argsort(order)
        super().__init__(torch.Size(batch_shape), torch.Size(order.shape),
                         validate_args=validate_args)

    @property
    def dim(self) -> int:
        return self.order.shape[0]

    def _log_prob(self, value: torch.Tensor) -> torch.Tensor:
        # the network sees the value as given; its context broadcasts against it
        lp = bernoulli_log_prob(self.logits_fn(value), value)
        return lp.expand(torch.broadcast_shapes(lp.shape, self.batch_shape))

    @torch.no_grad()
    def ancestral(self, sample_shape: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """An ancestral draw and the conditional probabilities it was drawn with:
        ``(x, p)`` with ``p_d = P(x_d = 1 | the values before d in the ordering)``."""
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        x = torch.zeros(shape, device=self.order.device, dtype=self.dtype)
        probe = self.logits_fn(x)                      # the shape a context broadcasts to
        probs = torch.zeros(torch.broadcast_shapes(shape, probe.shape), dtype=probe.dtype,
                            device=probe.device)
        x = x.expand_as(probs).clone()
        for k in range(self.dim):
            p = torch.sigmoid(self.logits_fn(x))
            now = self.rank == k
            probs = torch.where(now, p, probs)
            x = torch.where(now, torch.bernoulli(p), x)
        return x, probs


class OrderMixture(_BinaryVectors):
    """The uniform mixture ``(1/M) sum_m p_m(x)`` of autoregressive distributions over
    the same values (one per ordering or mask): MADE's ensemble at test time.

    ``log_prob`` is ``logsumexp_m log p_m(x) - log M`` (exact); ``sample`` picks one
    component per draw uniformly and draws from it ancestrally.
    """

    _fields = ("components",)

    def __init__(self, components: Sequence[AutoregressiveBernoulli], *,
                 validate_args: bool | None = None):
        components = list(components)
        if not components:
            raise ValueError("OrderMixture needs at least one component")
        shapes = {c.event_shape for c in components}
        if len(shapes) != 1:
            raise ValueError(f"the components of an OrderMixture must share one event shape, "
                             f"got {sorted(tuple(s) for s in shapes)}")
        self.components = components
        batch = torch.broadcast_shapes(*(c.batch_shape for c in components))
        super().__init__(batch, components[0].event_shape, validate_args=validate_args)

    def _expanded_field(self, name: str, batch_shape: torch.Size):
        return [c.expand(batch_shape) for c in self.components]

    def _log_prob(self, value: torch.Tensor) -> torch.Tensor:
        lps = torch.stack(torch.broadcast_tensors(*(c.log_prob(value) for c in self.components)))
        return torch.logsumexp(lps, 0) - math.log(len(self.components))

    @torch.no_grad()
    def ancestral(self, sample_shape: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """A draw and its conditional probabilities (under the chosen component)."""
        shape = torch.Size(sample_shape) + self.batch_shape
        draws = [c.expand(self.batch_shape).ancestral(sample_shape) for c in self.components]
        xs = torch.stack([x.expand(shape + self.event_shape) for x, _ in draws])
        ps = torch.stack([p.expand(shape + self.event_shape) for _, p in draws])
        pick = torch.randint(len(self.components), shape, device=xs.device)
        index = pick.unsqueeze(0).unsqueeze(-1).expand((1,) + xs.shape[1:])
        return xs.gather(0, index)[0], ps.gather(0, index)[0]
