"""The sentence VAE (Bowman et al. 2015, "Generating sentences from a continuous space").

``z ~ N(0, I)``; a recurrent decoder (GRU or LSTM) starts from ``h_0 = tanh(W z + b)``
and gives ``p(x | z) = prod_t p(x_t | x_<t, z)`` over the tokens of a sentence up to
and including its end token.  Data are rows of token ids as :mod:`ppl_dgm.tokens`
defines them (the words, ``<eos>``, ``<pad>`` after it); the padding is masked per
position inside :class:`SentenceDistribution`, so sentences of every length share one
batch and the observed site ``"x"`` is one event of ``x_dim`` positions.  The model
never generates ``<pad>`` or ``<bos>``, and at the last position only ``<eos>``: the
distribution is normalised over exactly the sentences of at most ``x_dim - 1`` words.

Against posterior collapse (a decoder that ignores ``z``) it has Bowman's two options:

* ``kl_anneal="linear"`` or ``"logistic"``: the KL term is weighted by ``beta`` rising
  from (almost) 0 to 1 over ``anneal_steps`` training steps.  ``beta`` is a
  ``poutine.scale`` on the latent site ``z`` in the model *and* in the guide (as Pyro's
  DMM example does), so every estimator optimises ``E_q[log p(x|z)] - beta KL`` without
  knowing about it (the engine keeps a site's relative scale inside every logsumexp).
  The step counter is a buffer of :class:`KLAnnealing` (saved with checkpoints, so a
  resumed run continues the schedule); it counts the distinct training batches that
  model or guide see in training mode with gradients on: one per step of
  :func:`ppl_dgm.train.fit` (plus one for fit's pre-flight check).  The guide shares the
  model's schedule when built with ``SentenceEncoder.from_model(model)`` (as the
  registry and CLI do).  In eval mode ``beta = 1``.
* ``word_dropout=p``: in training mode each decoder input word is replaced by
  ``<unk>`` with probability ``p``, so the decoder must take more from ``z``.  In eval
  mode (evaluation, sampling) nothing is dropped.

Both change the training objective only; evaluation (``model.eval()``) always scores
the plain model.  Example::

    from ppl_dgm.text import load_text
    from ppl_dgm.guides import SentenceEncoder
    data = load_text()
    model = SentenceVAE(x_dim=data.x_dim, vocab_size=len(data.vocab), kl_anneal="logistic",
                        word_dropout=0.3)
    guide = SentenceEncoder.from_model(model)
    fit(model, guide, ELBO(), data, steps=3000)
    model.eval(); data.decode(model.sample(5))
"""

from __future__ import annotations

import math
import weakref

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.nn import PyroModule
from torch import nn
from torch.distributions import constraints

from ppl_dgm.nn import plate_size, recurrent
from ppl_dgm.tokens import BOS, EOS, PAD, UNK

__all__ = ["KLAnnealing", "SentenceDistribution", "SentenceVAE"]

ANNEALING = ("none", "linear", "logistic")


class KLAnnealing(PyroModule):
    """The KL weight ``beta(step)``: ``"none"`` (always 1), ``"linear"``
    (``min(1, max(step, 1) / steps)``) or ``"logistic"``
    (``1 / (1 + exp(-10 (step / steps - 1/2)))``, Bowman's shape: 0.007 at step 0,
    1/2 at ``steps / 2``, 0.993 at ``steps``).  Always positive, 1 in eval mode."""

    def __init__(self, kind: str = "none", steps: int = 2000):
        super().__init__()
        if kind not in ANNEALING:
            raise ValueError(f"kl_anneal={kind!r} is unknown; choose one of {ANNEALING}")
        if steps < 1:
            raise ValueError(f"anneal_steps={steps}: give a positive number of steps")
        self.kind, self.steps = kind, int(steps)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._last = None

    def advance(self, x: torch.Tensor | None) -> None:
        """Count ``x`` as one more training step if it is a batch not seen just before
        (the guide and the model of one step see the same tensor).  No host sync."""
        if self.kind == "none" or not self.training or x is None or \
                not torch.is_grad_enabled():
            return
        last = self._last() if self._last is not None else None
        if last is x:
            return
        self._last = weakref.ref(x)
        self.step.add_(1)

    def weight(self) -> torch.Tensor | float:
        """``beta`` now: a device scalar while annealing in training mode, else 1.0."""
        if self.kind == "none" or not self.training:
            return 1.0
        s = self.step.to(torch.float32)
        if self.kind == "linear":
            return s.clamp(min=1.0, max=float(self.steps)) / self.steps
        return torch.sigmoid(10.0 * (s / self.steps - 0.5))


class _Sentences(constraints.Constraint):
    """Rows of ``width`` token ids below ``vocab_size``: words, one ``<eos>``, then
    ``<pad>``; no ``<bos>`` and no ``<pad>`` before the end."""

    event_dim = 1

    def __init__(self, vocab_size: int, width: int):
        self.vocab_size, self.width = vocab_size, width
        super().__init__()

    def check(self, value):
        whole = (value == value.round()) & (value >= 0) & (value < self.vocab_size)
        eos = value == EOS
        after = (eos.long().cumsum(-1) - eos.long()) > 0
        ok = whole & (value != BOS) & torch.where(after, value == PAD, value != PAD)
        return ok.all(-1) & (eos.sum(-1) == 1)

    def __repr__(self):
        return (f"Sentences(vocab_size={self.vocab_size}, width={self.width}: ids < vocab_size, "
                f"words then one <eos>={EOS} then <pad>={PAD})")


class SentenceDistribution(TorchDistribution):
    """``p(x | z)`` of a :class:`SentenceVAE` as a Pyro distribution over whole rows.

    ``log_prob(x)`` runs the decoder on ``<bos> x_1 .. x_{T-1}`` (teacher forcing, with
    word dropout when asked) and sums ``log p(x_t | x_<t, z)`` over the positions that
    hold a token (the per-position padding mask); ``sample()`` decodes left to right,
    sampled or greedy (``greedy=True``)."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, model: SentenceVAE, z: torch.Tensor, *, word_dropout: float = 0.0,
                 greedy: bool = False):
        self.model, self.z, self.word_dropout, self.greedy = model, z, word_dropout, greedy
        super().__init__(z.shape[:-1], torch.Size([model.x_dim]), validate_args=False)

    @property
    def support(self):
        return _Sentences(self.model.vocab_size, self.model.x_dim)

    def expand(self, batch_shape, _instance=None):
        z = self.z.expand(torch.Size(batch_shape) + self.z.shape[-1:])
        return SentenceDistribution(self.model, z, word_dropout=self.word_dropout,
                                    greedy=self.greedy)

    def sample(self, sample_shape=()):
        z = self.z.expand(torch.Size(sample_shape) + self.z.shape)
        return self.model.decode(z, greedy=self.greedy)

    def log_prob(self, value):
        return self.model.sequence_log_prob(self.z, value, word_dropout=self.word_dropout)


class SentenceVAE(PyroModule):
    """Sentence VAE over rows of token ids (see the module docstring).

    :param x_dim: row width, ``max_len + 1`` (a :class:`~ppl_dgm.text.TextDataset`'s
        ``x_dim``).  :param vocab_size: tokens including the four specials.
    :param z_dim, embed_dim, hidden_dim, rnn, layers: sizes and ``"gru"``/``"lstm"``.
    :param kl_anneal, anneal_steps: KL annealing schedule (:class:`KLAnnealing`).
    :param word_dropout: probability of replacing a decoder input word by ``<unk>``.
    """

    default_guide = "sentence"
    latent_dims: dict[str, int]

    def __init__(self, x_dim: int = 17, vocab_size: int = 208, z_dim: int = 16,
                 embed_dim: int = 64, hidden_dim: int = 128, rnn: str = "gru", layers: int = 1,
                 kl_anneal: str = "none", anneal_steps: int = 2000, word_dropout: float = 0.0):
        super().__init__()
        if x_dim < 2:
            raise ValueError(f"x_dim={x_dim}: a row holds at least one word and <eos>")
        if vocab_size <= UNK + 1:
            raise ValueError(f"vocab_size={vocab_size}: needs the 4 special tokens and at "
                             f"least one word")
        if not 0.0 <= word_dropout <= 1.0:
            raise ValueError(f"word_dropout={word_dropout}: give a probability in [0, 1]")
        self.x_dim, self.vocab_size, self.z_dim = int(x_dim), int(vocab_size), int(z_dim)
        self.hidden_dim, self.rnn_kind, self.layers = int(hidden_dim), rnn, int(layers)
        self.word_dropout = float(word_dropout)
        self.latent_dims = {"z": self.z_dim}
        self.annealing = KLAnnealing(kl_anneal, anneal_steps)
        self.nets = PyroModule[nn.ModuleDict]({
            "embed": nn.Embedding(self.vocab_size, embed_dim, padding_idx=PAD),
            "init": nn.Linear(self.z_dim, self.layers * self.hidden_dim),
            "rnn": recurrent(rnn, embed_dim, self.hidden_dim, layers=self.layers),
            "out": nn.Linear(self.hidden_dim, self.vocab_size)})
        allowed = torch.zeros(self.x_dim, self.vocab_size)
        allowed[:, [PAD, BOS]] = -math.inf
        allowed[-1, :] = -math.inf
        allowed[-1, EOS] = 0.0
        self.register_buffer("output_mask", allowed, persistent=False)
        self.register_buffer("prior_loc", torch.zeros(self.z_dim))
        self.register_buffer("prior_scale", torch.ones(self.z_dim))

    @property
    def can_enumerate(self) -> bool:
        """``log_prob`` integrates over ``z`` numerically: only for ``z_dim == 1``."""
        return self.z_dim == 1

    # ------------------------------------------------------------------ the program
    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None):
        self.annealing.advance(x)
        with pyro.plate("data", plate_size(x, batch_size)):
            with poutine.scale(scale=self.annealing.weight()):
                z = pyro.sample("z", dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
            p = self.word_dropout if self.training else 0.0
            return pyro.sample("x", SentenceDistribution(self, z, word_dropout=p), obs=x)

    # ------------------------------------------------------------------ the decoder
    def _state(self, z: torch.Tensor):
        """Initial RNN state from flat ``z`` ``(B, z_dim)``."""
        h = torch.tanh(self.nets["init"](z)).view(-1, self.layers, self.hidden_dim)
        h = h.transpose(0, 1).contiguous()
        return (h, torch.zeros_like(h)) if self.rnn_kind == "lstm" else h

    def logits(self, z: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Masked next-token logits ``(..., T, V)`` for decoder ``inputs`` ``(..., T)``
        (long ids, starting with ``<bos>``) and latents ``z`` ``(..., z_dim)``."""
        batch = inputs.shape[:-1]
        out, _ = self.nets["rnn"](self.nets["embed"](inputs.reshape(-1, inputs.shape[-1])),
                                  self._state(z.reshape(-1, self.z_dim)))
        logits = self.nets["out"](out) + self.output_mask[:inputs.shape[-1]]
        return logits.view(*batch, inputs.shape[-1], self.vocab_size)

    def sequence_log_prob(self, z: torch.Tensor, x: torch.Tensor, *,
                          word_dropout: float = 0.0) -> torch.Tensor:
        """``log p(x | z)`` per row, shape ``broadcast(x.shape[:-1], z.shape[:-1])``."""
        ids = x.long()
        batch = torch.broadcast_shapes(ids.shape[:-1], z.shape[:-1])
        ids = ids.expand(batch + ids.shape[-1:])
        z = z.expand(batch + z.shape[-1:])
        mask = ids != PAD
        inputs = torch.cat([torch.full_like(ids[..., :1], BOS), ids[..., :-1]], -1)
        if word_dropout > 0:
            drop = torch.rand(inputs.shape, device=inputs.device) < word_dropout
            inputs = inputs.masked_fill(drop & (inputs != BOS) & (inputs != PAD), UNK)
        logp = self.logits(z, inputs).log_softmax(-1)
        logp = logp.gather(-1, ids.masked_fill(~mask, EOS).unsqueeze(-1)).squeeze(-1)
        return torch.where(mask, logp, torch.zeros_like(logp)).sum(-1)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, *, greedy: bool = True) -> torch.Tensor:
        """Rows of ids ``(..., x_dim)`` (float32) decoded left to right from latents
        ``z`` ``(..., z_dim)``: the most likely token at each step (``greedy``) or a
        sampled one; ``<pad>`` after the end token."""
        batch = z.shape[:-1]
        flat = z.reshape(-1, self.z_dim)
        state = self._state(flat)
        token = torch.full((flat.shape[0],), BOS, dtype=torch.long, device=z.device)
        done = torch.zeros_like(token, dtype=torch.bool)
        rows = []
        for t in range(self.x_dim):
            out, state = self.nets["rnn"](self.nets["embed"](token).unsqueeze(1), state)
            logits = self.nets["out"](out[:, 0]) + self.output_mask[t]
            token = logits.argmax(-1) if greedy else dist.Categorical(logits=logits).sample()
            token = token.masked_fill(done, PAD)
            rows.append(token)
            done = done | (token == EOS)
        return torch.stack(rows, -1).reshape(*batch, self.x_dim).float()

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False) -> torch.Tensor:
        """``n`` sentences with ``z`` from the prior: sampled decoding, or greedy with
        ``mean=True`` (the text analogue of an image's mean)."""
        z = dist.Normal(self.prior_loc, self.prior_scale).sample((n,))
        return self.decode(z, greedy=mean)

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, *, points: int = 4001, bound: float = 10.0,
                 chunk: int = 256) -> torch.Tensor:
        """``log p(x) = log int N(z; 0, 1) p(x | z) dz`` per row for ``z_dim == 1``, by
        the trapezoid rule on ``points`` equally spaced ``z`` in ``[-bound, bound]``
        (the prior mass outside is below 2e-23; the tests check the grid against one
        twice as fine)."""
        if self.z_dim != 1:
            raise ValueError(f"exact log p(x) integrates over z numerically and needs "
                             f"z_dim=1 (this model has z_dim={self.z_dim}); use "
                             f"ppl_dgm.evaluate.importance_log_likelihood")
        grid = torch.linspace(-bound, bound, points, dtype=x.dtype if x.is_floating_point()
                              else torch.float32, device=x.device)
        weights = torch.full_like(grid, 2 * bound / (points - 1))
        weights[0] = weights[-1] = weights[0] / 2
        log_prior = dist.Normal(0.0, 1.0).log_prob(grid) + weights.log()
        cols = []
        for i in range(0, points, chunk):
            z = grid[i:i + chunk, None, None]                      # (C, 1, 1)
            cols.append(self.sequence_log_prob(z.to(self.prior_loc.dtype), x)
                        + log_prior[i:i + chunk, None])            # (C, N)
        return torch.logsumexp(torch.cat(cols, 0), 0)
