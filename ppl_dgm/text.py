"""Text data: one sentence per line -> token ids with a vocabulary, padding and a split.

How text flows through the package: a :class:`TextDataset` is a
:class:`~ppl_dgm.data.Dataset` whose ``train`` and ``test`` are float32 tensors
``(N, max_len + 1)`` of token ids (see :mod:`ppl_dgm.tokens`: the words, one
``<eos>``, then ``<pad>`` = 0).  :func:`ppl_dgm.train.fit` slices minibatches of these
rows like any other data, so no estimator, trainer or checkpoint code knows about text;
masks and lengths follow from the padding (:func:`ppl_dgm.tokens.token_mask`,
:func:`~ppl_dgm.tokens.lengths`).  The dataset also carries its :class:`Vocabulary`,
which decodes ids back to words and gives models their ``vocab_size``
(:attr:`TextDataset.model_options`).

Loading (:func:`load_text`): each non-blank line is a sentence; it is lower-cased and
split into words and punctuation (:func:`tokenize`).  The sentences are split into
train and test by one seeded permutation; the vocabulary is built from the training
sentences only: the ``max_vocab`` most frequent words (ties in alphabetical order) that
occur at least ``min_count`` times, every other word becomes ``<unk>``.  A sentence of
more than ``max_len`` tokens is refused by line number (``on_long="error"``, the
default) or cut to ``max_len`` tokens with one warning (``on_long="truncate"``).

Command line: ``--data text`` is the embedded corpus (:mod:`ppl_dgm.corpus`, generated
from a small grammar, 4000 sentences, fixed split of 3600 / 400); ``--data text:FILE``
is a file, with options after commas, e.g. ``text:poems.txt,max_len=30,max_vocab=5000,
on_long=truncate,test_fraction=0.2``.

Example::

    from ppl_dgm.text import load_text
    data = load_text("sentences.txt", max_len=30, max_vocab=10000)
    data.train.shape            # (N_train, max_len + 1) float32 token ids
    data.decode(data.train[:2])  # ['the cat sat .', ...]
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .corpus import embedded_sentences
from .data import Dataset
from .errors import DataError
from .tokens import EOS, PAD, SPECIALS, UNK, lengths

__all__ = ["TextDataset", "Vocabulary", "encode_sentences", "load_text", "load_text_spec",
           "num_tokens", "perplexity", "tokenize"]

_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)?|[^\w\s]|_+")
ON_LONG = ("error", "truncate")


def tokenize(line: str, *, lowercase: bool = True) -> list[str]:
    """Words (letters and digits, with an inner apostrophe) and single punctuation
    marks: ``"Don't stop, now!"`` -> ``["don't", "stop", ",", "now", "!"]``."""
    return _TOKEN.findall(line.lower() if lowercase else line)


@dataclass(frozen=True)
class Vocabulary:
    """Token strings by id; ids 0-3 are the specials of :mod:`ppl_dgm.tokens`."""

    words: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if tuple(self.words[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary starts with the special tokens {SPECIALS}, got "
                             f"{tuple(self.words[:len(SPECIALS)])}")
        if len(set(self.words)) != len(self.words):
            raise ValueError("vocabulary words must be unique")
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], *, max_size: int | None = 10000,
              min_count: int = 1) -> Vocabulary:
        """The ``max_size`` most frequent words of tokenised ``sentences`` (ties broken
        alphabetically) that occur at least ``min_count`` times."""
        if max_size is not None and max_size < 1:
            raise DataError(f"max_vocab={max_size} keeps no words: every word would be "
                            f"<unk>; give max_vocab >= 1 (or None for no limit)")
        if min_count < 1:
            raise DataError(f"min_count={min_count}: give min_count >= 1")
        counts = Counter(w for s in sentences for w in s if w not in SPECIALS)
        ranked = sorted((w for w, c in counts.items() if c >= min_count),
                        key=lambda w: (-counts[w], w))
        return cls(SPECIALS + tuple(ranked[:max_size]))

    def __len__(self) -> int:
        return len(self.words)

    def id(self, word: str) -> int:
        return self._index.get(word, UNK)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Ids of ``tokens`` (``<unk>`` for words outside the vocabulary), no end token."""
        return [self.id(w) for w in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words of one row of ids, up to (not including) the first ``<eos>``."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i != PAD:
                out.append(self.words[i] if 0 <= i < len(self.words) else SPECIALS[UNK])
        return out


@dataclass(frozen=True)
class TextDataset(Dataset):
    """A :class:`~ppl_dgm.data.Dataset` of token-id rows plus the vocabulary.

    ``max_len`` is the most tokens a sentence may have (the rows have ``max_len + 1``
    columns: room for the end token); ``truncated`` counts the sentences cut to it."""

    vocab: Vocabulary | None = field(default=None, repr=False)
    max_len: int = 0
    truncated: int = 0
    lowercase: bool = True

    @property
    def model_options(self) -> dict:
        """A text model needs the vocabulary size (``x_dim`` is the row width)."""
        return {"vocab_size": len(self.vocab)}

    def decode(self, x: torch.Tensor) -> list[str]:
        """Sentences (tokens joined by spaces) of rows of ids."""
        return [" ".join(self.vocab.decode(row)) for row in x.long().tolist()]

    def encode(self, sentences: Sequence[str], *, on_long: str = "error") -> torch.Tensor:
        """Rows of ids for new sentences, with this dataset's vocabulary and width."""
        tokens = [tokenize(s, lowercase=self.lowercase) for s in sentences]
        for i, t in enumerate(tokens):
            if not t:
                raise DataError(f"sentence {i + 1} ({sentences[i]!r}) has no words")
        return encode_sentences(tokens, self.vocab, self.max_len, on_long=on_long,
                                where=lambda i: f"sentence {i + 1} ({sentences[i]!r})")


def encode_sentences(tokens: Sequence[Sequence[str]], vocab: Vocabulary, max_len: int, *,
                     on_long: str = "error", where=None, warn: bool = True) -> torch.Tensor:
    """Float32 rows ``(N, max_len + 1)``: ids, one ``<eos>``, ``<pad>`` after it.

    A sentence of more than ``max_len`` tokens is refused (``on_long="error"``) or cut
    (``"truncate"``, with one warning that counts them)."""
    if on_long not in ON_LONG:
        raise DataError(f"on_long={on_long!r}; choose one of {ON_LONG}")
    if max_len < 1:
        raise DataError(f"max_len={max_len}: a sentence needs room for at least one token")
    where = where or (lambda i: f"sentence {i + 1}")
    out = np.full((len(tokens), max_len + 1), PAD, dtype=np.float32)
    cut = []
    for i, t in enumerate(tokens):
        if len(t) > max_len:
            if on_long == "error":
                raise DataError(f"{where(i)} has {len(t)} tokens, more than max_len="
                                f"{max_len}; raise max_len, remove the line, or pass "
                                f"on_long='truncate' to cut long sentences")
            cut.append(i)
            t = t[:max_len]
        ids = vocab.encode(t)
        out[i, :len(ids)] = ids
        out[i, len(ids)] = EOS
    if cut and warn:
        warnings.warn(f"{len(cut)} sentence(s) longer than max_len={max_len} tokens were "
                      f"truncated to it (first: {where(cut[0])})", UserWarning, stacklevel=2)
    return torch.from_numpy(out)


def _read_lines(path: Path) -> list[tuple[int, str]]:
    if not path.exists():
        raise DataError(f"text file {str(path)!r} does not exist")
    if not path.is_file():
        raise DataError(f"text file {str(path)!r} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"text file {str(path)!r} is not UTF-8 ({e}); convert it, e.g. "
                        f"iconv -t utf-8") from e
    return [(n + 1, line) for n, line in enumerate(text.splitlines()) if line.strip()]


def load_text(path: str | Path | None = None, *, sentences: Sequence[str] | None = None,
              max_len: int | None = 50, max_vocab: int | None = 10000, min_count: int = 1,
              test_fraction: float = 0.1, seed: int = 0, on_long: str = "error",
              lowercase: bool = True) -> TextDataset:
    """A :class:`TextDataset` from a text file (one sentence per line), from a list of
    ``sentences``, or (neither given) from the embedded corpus.

    :param max_len: most tokens per sentence (``None``: the longest sentence).  The rows
        are as wide as the longest sentence after truncation, plus one.
    :param max_vocab: most word types kept (the specials come on top); ``None``: all.
    :param test_fraction: share of sentences held out (one seeded permutation).
    :param on_long: ``"error"`` refuses a sentence longer than ``max_len`` by line
        number, ``"truncate"`` cuts it (one warning).
    """
    if path is not None and sentences is not None:
        raise ValueError("give a file path or a list of sentences, not both")
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test_fraction={test_fraction}; give a fraction in [0, 1)")
    if max_vocab is not None and max_vocab < 1:
        Vocabulary.build([], max_size=max_vocab)   # raises the named error
    if path is not None:
        path = Path(path)
        lines = _read_lines(path)
        source, name = f"{path.name}", path.stem
        if not lines:
            raise DataError(f"text file {str(path)!r} has no sentences (it is empty or every "
                            f"line is blank); put one sentence per line")
    else:
        raw = embedded_sentences() if sentences is None else list(sentences)
        lines = [(n + 1, s) for n, s in enumerate(raw) if s.strip()]
        source = "the embedded corpus" if sentences is None else "the given sentences"
        name = "text" if sentences is None else "sentences"
        if not lines:
            raise DataError(f"{source} hold no sentences (all are empty)")
    tokens = [tokenize(s, lowercase=lowercase) for _, s in lines]
    keep = [i for i, t in enumerate(tokens) if t]
    lines, tokens = [lines[i] for i in keep], [tokens[i] for i in keep]
    if not lines:
        raise DataError(f"{source} has no line with a word or punctuation mark")
    longest = max(len(t) for t in tokens)
    if on_long not in ON_LONG:
        raise DataError(f"on_long={on_long!r}; choose one of {ON_LONG}")
    if max_len is not None and max_len < 1:
        raise DataError(f"max_len={max_len}: a sentence needs room for at least one token")
    if on_long == "error" and max_len is not None and longest > max_len:
        n, t = next((n, t) for (n, _), t in zip(lines, tokens) if len(t) > max_len)
        kind = "line" if path is not None else "sentence"
        raise DataError(f"{kind} {n} of {source} has {len(t)} tokens, more than max_len="
                        f"{max_len}; raise max_len, remove the line, or pass "
                        f"on_long='truncate' to cut long sentences")
    width = longest if max_len is None else min(max_len, longest)
    order = np.random.default_rng(seed).permutation(len(tokens))
    n_test = int(round(test_fraction * len(tokens)))
    if len(tokens) - n_test < 1:
        raise DataError(f"{source} has {len(tokens)} sentence(s): too few to hold out "
                        f"test_fraction={test_fraction} and keep one for training")
    test_idx, train_idx = order[:n_test], order[n_test:]
    vocab = Vocabulary.build([tokens[i] for i in train_idx], max_size=max_vocab,
                             min_count=min_count)
    where_name = f"line {{}} of {source}" if path is not None else f"sentence {{}} of {source}"

    def encode(idx):
        return encode_sentences([tokens[i] for i in idx], vocab, width, on_long=on_long,
                                where=lambda j: where_name.format(lines[idx[j]][0]), warn=False)

    train, test = encode(train_idx), encode(test_idx)
    cut = [n for (n, _), t in zip(lines, tokens) if len(t) > width]
    if cut:
        warnings.warn(f"{len(cut)} sentence(s) of {source} longer than max_len={width} tokens "
                      f"were truncated to it (first: {where_name.format(cut[0])})", UserWarning,
                      stacklevel=2)
    unk = float((train == UNK).sum()) / max(1, num_tokens(train))
    desc = (f"{len(train)} train / {len(test)} test sentences from {source} (split seed "
            f"{seed}); vocabulary {len(vocab)} tokens incl. 4 specials ({100 * unk:.1f}% of "
            f"training tokens <unk>); max_len {width} tokens + <eos>")
    return TextDataset(name=name, train=train, test=test, binary=False, description=desc,
                       vocab=vocab, max_len=width, truncated=len(cut), lowercase=lowercase)


_OPTION_TYPES = {"max_len": int, "max_vocab": int, "min_count": int, "test_fraction": float,
                 "seed": int, "on_long": str, "lowercase": lambda v: v.lower() == "true"}


def load_text_spec(spec: str, *, seed: int = 0) -> TextDataset:
    """``"text"`` (the embedded corpus, fixed split) or ``"text:FILE[,key=value...]"``
    (options of :func:`load_text`; the split seed defaults to ``seed``)."""
    if spec == "text":
        return load_text()
    if not spec.startswith("text:") or len(spec) == len("text:"):
        raise DataError(f"text data spec {spec!r}: use 'text' (embedded corpus) or "
                        f"'text:FILE[,max_len=N,max_vocab=N,on_long=truncate,...]'")
    path, *items = spec[len("text:"):].split(",")
    opts: dict = {"seed": seed}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in _OPTION_TYPES:
            raise DataError(f"text data option {item!r} in {spec!r}: expected key=value with "
                            f"key one of {sorted(_OPTION_TYPES)}")
        try:
            opts[key] = None if value.lower() == "none" else _OPTION_TYPES[key](value)
        except ValueError as e:
            raise DataError(f"text data option {item!r}: {e}") from e
    return load_text(path, **opts)


def num_tokens(x: torch.Tensor) -> int:
    """Tokens in rows of ids, end tokens included (the perplexity's denominator)."""
    return int(lengths(x).sum())


def perplexity(log_px: torch.Tensor, x: torch.Tensor) -> float:
    """``exp(-sum_n log p(x_n) / number of tokens)``, end tokens counted as tokens
    (Bowman et al. 2015 and language-model practice).  With an importance-sampled
    ``log p(x)`` (a stochastic lower bound) it is an estimated upper bound."""
    return float(torch.exp(-log_px.double().sum() / num_tokens(x)))
