"""What a trained sentence model says: KL, reconstruction, perplexity, samples, homotopies.

:func:`sentence_metrics` splits the ELBO of held-out sentences into its reconstruction
term ``E_q[log p(x|z)]`` and its KL term ``E_q[log q(z|x) - log p(z)]`` (Monte Carlo
over guide draws, eval mode: no annealing weight, no word dropout), and adds the
importance-sampled ``log p(x)`` (:func:`ppl_dgm.evaluate.importance_log_likelihood`),
the perplexities ``exp(-sum log p / tokens)`` from both, and the number of active
latent units (Burda et al. 2015: ``Var_x E_q[z_d] > 0.01``).  A KL near zero and no
active units is posterior collapse (Bowman et al. 2015).

:func:`homotopy` decodes ``z_t = (1 - t) z_a + t z_b`` between the posterior means of
two sentences (Bowman et al.'s "homotopies"); :func:`sample_report` and
:func:`homotopy_report` format samples and homotopies as the lines ``ppl-dgm sample``
prints and saves.

Example::

    from ppl_dgm.sentences import sentence_metrics, homotopy
    m = sentence_metrics(model, guide, data.test, num_samples=1000)
    m.kl, m.reconstruction, m.perplexity_is
    data.decode(homotopy(model, guide, data.encode(["the dog is happy ."]),
                         data.encode(["the storm hit the coast ."]), steps=5))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from .evaluate import importance_log_likelihood
from .particles import run_particles
from .protocol import sampler
from .text import TextDataset, num_tokens, perplexity
from .traces import guess_plate_nesting

__all__ = ["Decodes", "Encodes", "SentenceMetrics", "homotopy", "homotopy_report",
           "metric_lines", "sample_report", "sentence_metrics", "text_output"]


@runtime_checkable
class Decodes(Protocol):
    """A sentence model that decodes latents to rows of ids."""

    def decode(self, z: torch.Tensor, *, greedy: bool = True) -> torch.Tensor: ...


@runtime_checkable
class Encodes(Protocol):
    """A guide whose ``distribution(x)`` is ``q(z | x)`` (its mean locates a sentence)."""

    def distribution(self, x: torch.Tensor): ...


@dataclass(frozen=True)
class SentenceMetrics:
    """Per-sentence means (nats) and per-token perplexities of held-out sentences."""

    elbo: float
    reconstruction: float
    kl: float
    log_px_is: float
    perplexity_elbo: float
    perplexity_is: float
    active_units: int | None
    num_sentences: int
    tokens_per_sentence: float
    num_samples: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@torch.no_grad()
def sentence_metrics(model, guide, x: torch.Tensor, *, num_samples: int = 1000,
                     kl_samples: int = 50, batch_size: int = 200,
                     log_px: torch.Tensor | None = None) -> SentenceMetrics:
    """ELBO = reconstruction - KL (``kl_samples`` guide draws per sentence), IS
    ``log p(x)`` with ``num_samples`` draws (or the given ``log_px``), perplexities.

    The latent site is the guide's only latent (any name); model and guide should be in
    eval mode (the caller's job: ``model.eval(); guide.eval()``)."""
    nesting = guess_plate_nesting(model, guide, (x[:2],))
    recon, kl = [], []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size]
        tr = run_particles(model, guide, (xb,), {}, num_particles=kl_samples, nesting=nesting)
        log_lik = sum(tr.model_terms[n] for n in tr.observed)
        latent = sum(tr.model_terms[n] for n in tr.latents)
        recon.append(log_lik.mean(0))
        kl.append((tr.log_q - latent).mean(0))
    recon_t, kl_t = torch.cat(recon), torch.cat(kl)
    elbo = recon_t - kl_t
    if log_px is None:
        log_px = importance_log_likelihood(model, guide, x, num_samples=num_samples,
                                           batch_size=batch_size)
    active = None
    if isinstance(guide, Encodes) and x.shape[0] > 1:
        means = torch.cat([guide.distribution(x[i:i + batch_size]).mean
                           for i in range(0, x.shape[0], batch_size)])
        active = int((means.var(0) > 0.01).sum())
    return SentenceMetrics(
        elbo=float(elbo.mean()), reconstruction=float(recon_t.mean()), kl=float(kl_t.mean()),
        log_px_is=float(log_px.mean()), perplexity_elbo=perplexity(elbo, x),
        perplexity_is=perplexity(log_px, x), active_units=active,
        num_sentences=int(x.shape[0]), tokens_per_sentence=num_tokens(x) / x.shape[0],
        num_samples=num_samples)


def _check(model, guide) -> None:
    if not isinstance(model, Decodes):
        raise ValueError(f"model {type(model).__name__} has no decode(z, greedy=...) method; "
                         f"homotopies need a sentence model such as SentenceVAE")
    if not isinstance(guide, Encodes):
        raise ValueError(f"guide {type(guide).__name__} has no distribution(x) method; "
                         f"homotopies need an encoder such as SentenceEncoder")


@torch.no_grad()
def homotopy(model, guide, x_a: torch.Tensor, x_b: torch.Tensor, *, steps: int = 5,
             greedy: bool = True) -> torch.Tensor:
    """Rows of ids decoded from ``steps`` points ``z_t = (1 - t) mu(x_a) + t mu(x_b)``,
    ``t = 0, 1/(steps-1), ..., 1``, where ``mu`` is the guide's posterior mean.
    ``x_a`` and ``x_b`` are single rows (shape ``(1, x_dim)`` or ``(x_dim,)``)."""
    _check(model, guide)
    if steps < 2:
        raise ValueError(f"steps={steps}: a homotopy needs at least its two end points")
    za = guide.distribution(x_a.reshape(1, -1)).mean[0]
    zb = guide.distribution(x_b.reshape(1, -1)).mean[0]
    t = torch.linspace(0.0, 1.0, steps, device=za.device, dtype=za.dtype)[:, None]
    return model.decode((1 - t) * za + t * zb, greedy=greedy)


def sample_report(model, data: TextDataset, *, n: int = 10, greedy: bool = False) -> list[str]:
    """``n`` sentences from the model, one a line (what ``ppl-dgm sample`` prints):
    ``model.sample(n, mean=greedy)``, i.e. greedy decoding for a sentence VAE."""
    sample = sampler(model)
    if sample is None:
        raise ValueError(f"model {type(model).__name__} has no sample(n) method")
    return data.decode(sample(n, mean=greedy))


def homotopy_report(model, guide, data: TextDataset, a: str, b: str, *, steps: int = 7,
                    greedy: bool = True) -> list[str]:
    """The homotopy between sentences ``a`` and ``b`` as lines ``t=0.00  words``, after
    the two inputs as the vocabulary sees them (unknown words shown as ``<unk>``)."""
    rows = data.encode([a, b])
    device = next(model.parameters()).device
    path = homotopy(model, guide, rows[:1].to(device), rows[1:].to(device), steps=steps,
                    greedy=greedy)
    seen = data.decode(rows)
    out = [f"from: {seen[0]}", f"to:   {seen[1]}"]
    for t, sentence in zip(torch.linspace(0, 1, steps).tolist(), data.decode(path)):
        out.append(f"t={t:.2f}  {sentence}")
    return out


def text_output(model, guide, data: TextDataset, *, n: int = 10, decode: str | None = None,
                interpolate: Sequence[str] | None = None, steps: int = 7
                ) -> tuple[list[str], str]:
    """What ``ppl-dgm sample`` prints for a text run and the file name it saves it as:
    ``n`` samples (``samples.txt``; sampled decoding unless ``decode="greedy"``) or the
    homotopy between the two ``interpolate`` sentences (``interpolation.txt``; greedy
    unless ``decode="sample"``)."""
    if interpolate:
        a, b = interpolate
        return homotopy_report(model, guide, data, a, b, steps=steps,
                               greedy=decode != "sample"), "interpolation.txt"
    return sample_report(model, data, n=n, greedy=decode == "greedy"), "samples.txt"


def metric_lines(model, guide, x: torch.Tensor, log_px: torch.Tensor) -> list[str]:
    """The text lines ``ppl-dgm evaluate`` adds for a text run (the IS ``log_px`` given)."""
    m = sentence_metrics(model, guide, x, log_px=log_px)
    rows = [("E_q log p(x|z) (recon.)", f"{m.reconstruction:10.3f}"),
            ("KL(q(z|x) || p(z))", f"{m.kl:10.3f}"),
            ("perplexity (IS)", f"{m.perplexity_is:10.3f}  per token, "
                                f"{m.tokens_per_sentence:.2f} tokens/sentence incl. <eos>"),
            ("perplexity (ELBO)", f"{m.perplexity_elbo:10.3f}"),
            ("active units", f"{m.active_units!s:>10}")]
    return [f"  {label:<28} {value}" for label, value in rows]
