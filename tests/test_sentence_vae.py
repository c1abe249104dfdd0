"""The sentence VAE on a vocabulary and length small enough to enumerate every sentence.

With 3 generatable words (``<unk>``, ``a``, ``b``) and rows of width 3 (at most two
words, then ``<eos>``) there are 1 + 3 + 9 = 13 sentences, so ``p(x | z)`` can be summed
over all of them, and with ``z_dim = 1`` the exact ``log p(x) = log int N(z) p(x|z) dz``
is a one-dimensional integral of a smooth, Gaussian-tailed function: the model's
trapezoid rule (4001 points on [-10, 10]) is checked against an independent
200-point Gauss-Hermite rule and against a grid twice as fine.
"""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from ppl_dgm.guides import SentenceEncoder
from ppl_dgm.models import SentenceVAE
from ppl_dgm.models.sentence_vae import KLAnnealing
from pyro import poutine

from ppl_dgm.checks import check_model_data
from ppl_dgm.cli import main
from ppl_dgm.errors import DataError
from ppl_dgm.estimators import ELBO
from ppl_dgm.evaluate import bound, importance_log_likelihood
from ppl_dgm.sentences import homotopy, sentence_metrics
from ppl_dgm.text import load_text
from ppl_dgm.tokens import BOS, EOS, PAD, UNK
from ppl_dgm.traces import run_traces
from ppl_dgm.train import fit

WORDS = (UNK, 4, 5)


def _all_rows(dtype=torch.float64) -> torch.Tensor:
    rows = []
    for n in range(3):
        for words in itertools.product(WORDS, repeat=n):
            rows.append(list(words) + [EOS] + [PAD] * (2 - n))
    return torch.tensor(rows, dtype=dtype)


def _tiny(seed=0, **options):
    torch.manual_seed(seed)
    model = SentenceVAE(x_dim=3, vocab_size=6, z_dim=1, embed_dim=4, hidden_dim=8, **options)
    guide = SentenceEncoder.from_model(model, embed_dim=4, hidden_dim=8)
    return model, guide


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_every_sentence_sums_to_one_and_the_quadrature_is_exact(rnn):
    model, guide = _tiny(rnn=rnn)
    assert guide.nets["rnn"].__class__.__name__ == rnn.upper()    # the guide follows the model
    model.double().eval()
    x = _all_rows()
    assert x.shape == (13, 3)
    z = torch.randn(7, 1, 1, dtype=torch.float64) * 3
    total = model.sequence_log_prob(z, x).exp().sum(-1)            # sum_x p(x | z)
    assert torch.allclose(total, torch.ones(7, dtype=torch.float64), atol=1e-12)
    lp = model.log_prob(x)
    assert abs(float(lp.exp().sum()) - 1.0) < 1e-10
    assert float((model.log_prob(x, points=8001) - lp).abs().max()) < 1e-10
    # an independent rule: Gauss-Hermite (probabilists') with 200 nodes
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    zs = torch.tensor(nodes)[:, None, None]
    lw = torch.tensor(np.log(weights / math.sqrt(2 * math.pi)))[:, None]
    with torch.no_grad():
        gh = torch.logsumexp(model.sequence_log_prob(zs, x) + lw, 0)
    assert float((gh - lp).abs().max()) < 1e-8


def _fit_guide(steps=300, seed=0):
    """A tiny model whose sentences depend strongly on z (its z -> state weights scaled
    by 10 and its output weights by 5, so each sentence owns a few intervals of z),
    held fixed, and a guide fitted to it by the ELBO (model learning rate 0): the
    posterior is not Gaussian, so the guide leaves a gap that importance sampling
    closes.  (Trained jointly, this model collapses: its decoder alone can represent
    any distribution over the 13 sentences.)"""
    model, guide = _tiny(seed)
    with torch.no_grad():
        model.nets["init"].weight.mul_(10.0)
        model.nets["out"].weight.mul_(5.0)
    x = _all_rows(torch.float32)
    with torch.no_grad():
        x = x[torch.distributions.Categorical(logits=model.log_prob(x)).sample((400,))]
    fit(model, guide, ELBO(), x, steps=steps, batch_size=50, lr=1e-2, lr_groups={"model": 0.0},
        device="cpu", log_every=steps)
    model.double().eval(), guide.double().eval()
    return model, guide


def test_importance_sampling_rises_toward_the_exact_likelihood_and_the_elbo_stays_below():
    model, guide = _fit_guide()
    x = _all_rows()
    exact = model.log_prob(x)
    torch.manual_seed(1)
    reps = 30
    ladder, per_sentence = {}, {}
    for k in (1, 10, 100, 1000):
        draws = torch.stack([bound(model, guide, x, k) for _ in range(reps)])  # (R, 13)
        gap = exact - draws                                  # >= 0 in expectation
        ladder[k] = (float(gap.mean()), float(gap.mean(1).std() / math.sqrt(reps)))
        per_sentence[k] = gap.mean(0)
    gaps = [ladder[k][0] for k in sorted(ladder)]
    ses = [ladder[k][1] for k in sorted(ladder)]
    # every estimate is below the exact value (in expectation: 3 standard errors) ...
    assert all(g > -3 * s for g, s in zip(gaps, ses)), ladder
    # ... the ELBO clearly so, and the gap shrinks as K grows, to near zero at K = 1000
    assert gaps[0] > 0.05 and gaps[0] > 10 * ses[0], ladder
    for a, b, sa, sb in zip(gaps, gaps[1:], ses, ses[1:]):
        assert b < a + 3 * math.hypot(sa, sb), ladder
    assert gaps[1] < 0.7 * gaps[0] and gaps[-1] < 0.1 * gaps[0], ladder
    # the evaluation module's streaming estimate works per sentence
    is_5000 = importance_log_likelihood(model, guide, x, num_samples=5000, chunk_size=1000)
    assert is_5000.shape == (13,)
    assert float((is_5000 - exact).abs().mean()) < 0.2 * gaps[0]
    loose = per_sentence[1] > 0.05                           # where the ELBO is loose, ...
    assert bool(((exact - is_5000)[loose] < per_sentence[1][loose]).all())  # ... IS is closer


def test_sampled_decoding_draws_from_the_model_and_greedy_takes_the_mode():
    model, _ = _tiny()
    model.eval()
    x = _all_rows(torch.float32)
    z = torch.full((1,), 0.7)
    with torch.no_grad():
        p = model.sequence_log_prob(z, x).exp()             # (13,)
    n = 20000
    torch.manual_seed(0)
    draws = model.decode(z.expand(n, 1), greedy=False)
    counts = torch.stack([(draws == row).all(-1).sum() for row in x]).float()
    assert int(counts.sum()) == n                            # every draw is one of the 13
    se = (p * (1 - p) / n).sqrt()
    assert float(((counts / n - p).abs() / se).max()) < 4.5
    # greedy: the argmax at every step, i.e. the row that maximises each step's choice
    greedy = model.decode(z[None], greedy=True)[0]
    inputs = torch.cat([torch.tensor([BOS]), greedy[:-1].long()])
    steps = model.logits(z[None], inputs[None])[0]
    valid = greedy != PAD
    assert torch.equal(steps.argmax(-1)[valid], greedy.long()[valid])


def test_word_dropout_replaces_decoder_inputs_in_training_mode_only():
    model, _ = _tiny(word_dropout=1.0)
    x = torch.tensor([[4.0, 5.0, EOS]])
    z = torch.zeros(1, 1)
    unk_inputs = torch.tensor([[BOS, UNK, UNK]])
    logp = model.logits(z, unk_inputs).log_softmax(-1)[0]
    expected = logp[0, 4] + logp[1, 5] + logp[2, EOS]
    got = model.sequence_log_prob(z, x, word_dropout=1.0)
    assert torch.allclose(got, expected[None])
    model.train()
    assert poutine.trace(model).get_trace(x).nodes["x"]["fn"].word_dropout == 1.0
    model.eval()
    assert poutine.trace(model).get_trace(x).nodes["x"]["fn"].word_dropout == 0.0


@pytest.mark.parametrize("kind,step,beta", [
    ("linear", 0, 1 / 100), ("linear", 50, 0.5), ("linear", 500, 1.0),
    ("logistic", 0, 1 / (1 + math.exp(5))), ("logistic", 50, 0.5), ("logistic", 100,
                                                                   1 / (1 + math.exp(-5)))])
def test_kl_schedules(kind, step, beta):
    a = KLAnnealing(kind, 100)
    a.step.fill_(step)
    assert float(a.weight()) == pytest.approx(beta, rel=1e-6)
    a.eval()
    assert a.weight() == 1.0
    assert KLAnnealing("none").weight() == 1.0
    with pytest.raises(ValueError, match="kl_anneal='cosine' is unknown"):
        KLAnnealing("cosine")


def test_kl_annealing_scales_the_latent_site_in_model_and_guide_and_counts_fit_steps():
    model, guide = _tiny(kl_anneal="linear", anneal_steps=40)
    x = _all_rows(torch.float32)
    fit(model, guide, ELBO(), x, steps=10, batch_size=4, device="cpu", log_every=5)
    assert int(model.annealing.step) == 11            # 10 steps + fit's pre-flight check
    model.train(), guide.train()
    tr = run_traces(model, guide, (x,), nesting=1)    # one more training batch: step 12
    beta = 12 / 40
    for trace in (tr.model_trace, tr.guide_trace):
        assert float(trace.nodes["z"]["scale"]) == pytest.approx(beta)
    assert tr.model_trace.nodes["x"]["scale"] == 1.0
    # the estimator's weights: log p(x|z) + beta (log p(z) - log q(z))
    z = tr.guide_trace.nodes["z"]
    log_q = z["fn"].log_prob(z["value"])
    log_pz = tr.model_trace.nodes["z"]["fn"].log_prob(z["value"])
    log_px = tr.model_trace.nodes["x"]["fn"].log_prob(x)
    assert torch.allclose(tr.log_w[0], log_px + beta * (log_pz - log_q), atol=1e-5)
    assert int(model.annealing.step) == 12 and "annealing.step" in model.state_dict()
    model.eval(), guide.eval()
    tr = run_traces(model, guide, (x,), nesting=1)
    assert tr.model_trace.nodes["z"]["scale"] == 1.0 and int(model.annealing.step) == 12


def test_homotopy_ends_at_the_decoded_posterior_means():
    model, guide = _fit_guide(steps=100)
    a, b = torch.tensor([[4.0, 4.0, EOS]]), torch.tensor([[5.0, EOS, PAD]])
    path = homotopy(model, guide, a, b, steps=6)
    assert path.shape == (6, 3)
    ends = model.decode(torch.cat([guide.distribution(a).mean, guide.distribution(b).mean]))
    assert torch.equal(path[[0, -1]], ends)
    m = sentence_metrics(model, guide, _all_rows(), num_samples=200)
    assert m.elbo == pytest.approx(m.reconstruction - m.kl) and m.kl > 0
    assert m.perplexity_is < m.perplexity_elbo and m.active_units == 1


def test_non_sentence_rows_are_outside_the_support():
    model, _ = _tiny()
    bad = torch.tensor([[4.0, PAD, EOS], [4.0, 5.0, 4.0], [BOS, EOS, PAD], [4.0, EOS, 5.0],
                        [9.0, EOS, PAD], [4.5, EOS, PAD]])
    ok = torch.tensor([[4.0, EOS, PAD], [EOS, PAD, PAD]])
    with pytest.raises(DataError, match="6 data points lie outside the support.*Sentences"):
        check_model_data(model, torch.cat([bad, ok]))
    check_model_data(model, ok)


def test_cli_train_sample_interpolate_evaluate(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = ["the cat sat on the mat .", "the dog ran .", "a bird sang a song .",
             "the cat ran .", "the dog sat on the mat .", "a dog sang ."] * 3
    (tmp_path / "s.txt").write_text("\n".join(lines) + "\n")
    tiny = ["--model-opt", "z_dim=2", "--model-opt", "hidden_dim=16", "--model-opt",
            "embed_dim=8", "--guide-opt", "hidden_dim=16", "--guide-opt", "embed_dim=8"]
    assert main(["train", "--model", "sentence-vae", "--data", "text:s.txt,test_fraction=0.2",
                 "--steps", "20", "--batch-size", "5", "--run-dir", "r", "--no-progress",
                 "--log-every", "10", "--eval-samples", "20", "--model-opt",
                 "kl_anneal=logistic", "--model-opt", "word_dropout=0.25", *tiny]) == 0
    assert "test perplexity (IS)" in capsys.readouterr().out
    assert json.loads((tmp_path / "r" / "config.json").read_text())["guide"] == "sentence"
    assert main(["sample", "r", "--n", "5"]) == 0
    out = capsys.readouterr().out
    saved = (tmp_path / "r" / "samples.txt").read_text().splitlines()
    assert len(saved) == 5 and saved[0] in out
    assert main(["sample", "r", "--interpolate", "the cat sat .", "a zebra sang .",
                 "--interp-steps", "4"]) == 0
    saved = (tmp_path / "r" / "interpolation.txt").read_text().splitlines()
    assert saved[:2] == ["from: the cat sat .", "to:   a <unk> sang ."] and len(saved) == 6
    assert saved[2].startswith("t=0.00") and saved[-1].startswith("t=1.00")
    assert main(["evaluate", "r", "--samples", "20", "--ks", "1"]) == 0
    out = capsys.readouterr().out
    assert "KL(q(z|x) || p(z))" in out and "perplexity (IS)" in out
    assert main(["sample", "r", "--interpolate", "the cat sat on the mat and the dog ran .",
                 "the dog ran ."]) == 2
    assert "has 11 tokens, more than max_len=7" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("\n\n")
    assert main(["train", "--model", "sentence-vae", "--data", "text:empty.txt"]) == 2
    assert "has no sentences" in capsys.readouterr().err
    assert main(["train", "--model", "sentence-vae", "--data", "text:s.txt,max_vocab=0"]) == 2
    assert "max_vocab=0 keeps no words" in capsys.readouterr().err


def test_text_loader_feeds_fit_with_the_vocabulary_size():
    d = load_text(sentences=["a b", "b a c", "c c", "a"] * 5, test_fraction=0.25)
    model = SentenceVAE(x_dim=d.x_dim, **d.model_options, z_dim=2, embed_dim=4, hidden_dim=8)
    guide = SentenceEncoder.from_model(model, embed_dim=4, hidden_dim=8)
    r = fit(model, guide, ELBO(num_particles=2), d, steps=6, batch_size=5, device="cpu",
            log_every=3, eval_every=3)
    assert math.isfinite(r.final["heldout_bound_k1"])


def test_a_resumed_run_continues_the_annealing_schedule_exactly(tmp_path):
    x = _all_rows(torch.float32)
    opts = dict(kl_anneal="logistic", anneal_steps=20, word_dropout=0.3)
    full, full_guide = _tiny(**opts)
    fit(full, full_guide, ELBO(), x, steps=20, batch_size=4, device="cpu", log_every=5)
    first, first_guide = _tiny(**opts)
    fit(first, first_guide, ELBO(), x, steps=10, batch_size=4, device="cpu", log_every=5,
        run_dir=tmp_path / "r")
    again, again_guide = _tiny(seed=1, **opts)       # other initial parameters: all restored
    fit(again, again_guide, ELBO(), x, steps=20, batch_size=4, device="cpu", log_every=5,
        run_dir=tmp_path / "r", resume=True)
    assert int(again.annealing.step) == int(full.annealing.step) == 21
    for a, b in zip([*full.parameters(), *full_guide.parameters()],
                    [*again.parameters(), *again_guide.parameters()]):
        assert torch.equal(a, b)
