"""Recurrent inference network for the sentence VAE (Bowman et al. 2015)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import nn
from torch.nn import functional as F

from ppl_dgm.nn import recurrent
from ppl_dgm.tokens import PAD, lengths

__all__ = ["SentenceEncoder"]


class SentenceEncoder(PyroModule):
    """``q(z | x) = N(mu(h), diag(sigma(h)^2))`` where ``h`` is the state of a GRU or
    LSTM after the last token of the sentence (its ``<eos>``; padding never enters).

    :param x_dim: row width, :param vocab_size: tokens incl. the specials, :param z_dim:
        latent size, :param embed_dim, hidden_dim, rnn, layers: the recurrent encoder.
    :param annealing: the model's :class:`~ppl_dgm.models.sentence_vae.KLAnnealing`; the
        guide scales its ``z`` site by the same KL weight as the model (so the objective
        is ``E_q log p(x|z) - beta KL``).  :meth:`from_model` passes it; it is not a
        submodule of the guide (the model owns and checkpoints it).

    Example::

        guide = SentenceEncoder.from_model(model)
        loc = guide.distribution(x).mean          # posterior means, e.g. for homotopies
    """

    def __init__(self, x_dim: int, vocab_size: int, z_dim: int, embed_dim: int = 64,
                 hidden_dim: int = 128, rnn: str = "gru", layers: int = 1, site: str = "z",
                 annealing=None):
        super().__init__()
        self.x_dim, self.vocab_size, self.z_dim = int(x_dim), int(vocab_size), int(z_dim)
        self.site = site
        self._annealing = (annealing,)   # shared with the model, not registered here
        self.nets = PyroModule[nn.ModuleDict]({
            "embed": nn.Embedding(self.vocab_size, embed_dim, padding_idx=PAD),
            "rnn": recurrent(rnn, embed_dim, hidden_dim, layers=layers),
            "head": nn.Linear(hidden_dim, 2 * self.z_dim)})

    @classmethod
    def from_model(cls, model, **options) -> SentenceEncoder:
        """An encoder fitting a :class:`~ppl_dgm.models.SentenceVAE`, sharing its KL
        annealing schedule."""
        try:
            sizes = (model.x_dim, model.vocab_size, model.z_dim)
            options.setdefault("rnn", model.rnn_kind)
            annealing = model.annealing
        except AttributeError as e:
            raise ValueError(f"SentenceEncoder.from_model needs a sentence model (x_dim, "
                             f"vocab_size, z_dim, rnn_kind, annealing); {type(model).__name__} "
                             f"lacks one ({e}). Build the guide with SentenceEncoder(x_dim=..., "
                             f"vocab_size=..., z_dim=...)") from None
        return cls(*sizes, annealing=annealing, **options)

    def distribution(self, x: torch.Tensor) -> dist.Distribution:
        ids = x.long()
        out, _ = self.nets["rnn"](self.nets["embed"](ids))
        last = (lengths(ids) - 1).clamp(min=0)
        h = out.gather(1, last.view(-1, 1, 1).expand(-1, 1, out.shape[-1])).squeeze(1)
        loc, raw = self.nets["head"](h).chunk(2, -1)
        return dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1)

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None):
        if x is None:
            raise ValueError("SentenceEncoder is an inference network: it needs observed x")
        annealing = self._annealing[0]
        if annealing is not None:
            annealing.advance(x)
        scale = annealing.weight() if annealing is not None else 1.0
        with pyro.plate("data", x.shape[0]), poutine.scale(scale=scale):
            return pyro.sample(self.site, self.distribution(x))
