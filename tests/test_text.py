"""Text data: tokenising, vocabulary, padding, masks, split, bad input, the embedded corpus."""

import math
import warnings

import pytest
import torch

from ppl_dgm.corpus import embedded_sentences
from ppl_dgm.data import load_data
from ppl_dgm.errors import DataError
from ppl_dgm.text import TextDataset, Vocabulary, load_text, num_tokens, perplexity, tokenize
from ppl_dgm.tokens import EOS, PAD, SPECIALS, UNK, lengths, token_mask

LINES = ["The cat sat on the mat.", "", "the dog ran!", "A bird sang a song, loudly.",
         "   ", "the cat ran .", "the dog sat on the mat ."]


def _write(tmp_path, lines, name="s.txt"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_tokenize_words_and_punctuation():
    assert tokenize("Don't stop, now!") == ["don't", "stop", ",", "now", "!"]
    assert tokenize("Don't", lowercase=False) == ["Don't"]
    assert tokenize("   ") == []


def test_file_to_padded_rows_vocabulary_masks_and_split(tmp_path):
    path = _write(tmp_path, LINES)
    d = load_text(path, test_fraction=0.4, seed=1)
    assert isinstance(d, TextDataset) and d.train.dtype == torch.float32
    # 5 non-blank lines: round(0.4 * 5) = 2 held out; the longest (line 4) has 8 tokens
    assert d.train.shape == (3, 9) and d.test.shape == (2, 9) and d.max_len == 8
    assert d.x_dim == 9 and d.model_options == {"vocab_size": len(d.vocab)}
    x = torch.cat([d.train, d.test])
    n = lengths(x)
    for row, k in zip(x, n.tolist()):       # words, one <eos>, then padding
        assert row[k - 1] == EOS and (row[k:] == PAD).all() and (row[:k - 1] > EOS).all()
    assert torch.equal(token_mask(x), x != PAD) and num_tokens(x) == int(n.sum())
    # the vocabulary comes from the training sentences only: test words may be <unk>
    train_words = {w for s in d.decode(d.train) for w in s.split()}
    assert set(d.vocab.words[len(SPECIALS):]) == train_words
    assert d.decode(d.train)[0] in {" ".join(tokenize(s)) for s in LINES if s.strip()}
    again = load_text(path, test_fraction=0.4, seed=1)
    assert torch.equal(again.train, d.train) and again.vocab == d.vocab
    assert not torch.equal(load_text(path, test_fraction=0.4, seed=2).test, d.test)


def test_vocabulary_limit_keeps_the_most_frequent_words():
    tokens = [["b", "a", "a", "c"], ["a", "b", "d"]]
    v = Vocabulary.build(tokens, max_size=2)
    assert v.words == SPECIALS + ("a", "b")          # a: 3, b: 2; c, d dropped
    assert v.encode(["a", "c", "zebra"]) == [4, UNK, UNK]
    assert v.decode([4, 5, EOS, 4]) == ["a", "b"]
    assert Vocabulary.build(tokens, max_size=None, min_count=2).words == SPECIALS + ("a", "b")
    d = load_text(sentences=["a a b", "a c", "a d"], max_vocab=1, test_fraction=0.0)
    assert sorted(d.decode(d.train)) == ["a <unk>", "a <unk>", "a a <unk>"]


def test_an_empty_file_is_refused_by_name(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match=r"empty\.txt' has no sentences \(it is empty"):
        load_text(tmp_path / "empty.txt")
    with pytest.raises(DataError, match="has no sentences"):
        load_data(f"text:{_write(tmp_path, ['', '  ', ''], 'blank.txt')}")
    with pytest.raises(DataError, match="does not exist"):
        load_text(tmp_path / "missing.txt")


def test_a_line_longer_than_max_len_is_refused_or_truncated(tmp_path):
    path = _write(tmp_path, LINES)
    # line 4 of the file has 8 tokens: a, bird, sang, a, song, ",", loudly, "."
    with pytest.raises(DataError, match=r"line 4 of s\.txt has 8 tokens, more than "
                                        r"max_len=7.*on_long='truncate'"):
        load_text(path, max_len=7)
    with pytest.warns(UserWarning, match=r"3 sentence\(s\) of s\.txt longer than max_len=6 "
                                         r"tokens were truncated to it \(first: line 1"):
        d = load_text(path, max_len=6, on_long="truncate", test_fraction=0.0)
    assert d.truncated == 3 and d.train.shape == (5, 7)
    assert int(lengths(d.train).max()) == 7              # 6 tokens + <eos>
    assert "the cat sat on the mat" in d.decode(d.train)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_text(path, max_len=8).truncated == 0   # nothing long: no warning
    with pytest.raises(DataError, match="on_long='cut'"):
        load_text(path, on_long="cut")
    # new sentences for a homotopy follow the same rule
    with pytest.raises(DataError, match=r"sentence 1 \('one .* nine'\) has 9 tokens, more "
                                        r"than max_len=8"):
        load_text(path).encode(["one two three four five six seven eight nine"])


def test_a_vocabulary_limit_of_zero_is_refused(tmp_path):
    path = _write(tmp_path, LINES)
    with pytest.raises(DataError, match="max_vocab=0 keeps no words.*max_vocab >= 1"):
        load_text(path, max_vocab=0)
    with pytest.raises(DataError, match="max_vocab=0 keeps no words"):
        load_data(f"text:{path},max_vocab=0")
    with pytest.raises(DataError, match="max_vocab=-3"):
        Vocabulary.build([["a"]], max_size=-3)


def test_data_spec_options_and_errors(tmp_path):
    path = _write(tmp_path, LINES)
    with pytest.warns(UserWarning, match="truncated"):
        d = load_data(f"text:{path},max_len=5,on_long=truncate,test_fraction=0.2,max_vocab=4")
    assert d.max_len == 5 and d.test.shape[0] == 1 and len(d.vocab) == 8
    with pytest.raises(DataError, match="text data option 'maxlen=5'"):
        load_data(f"text:{path},maxlen=5")
    with pytest.raises(DataError, match="text data option 'max_len=five'"):
        load_data(f"text:{path},max_len=five")
    with pytest.raises(DataError, match="too few"):
        load_text(sentences=["one sentence", "two"], test_fraction=0.9)


def test_the_embedded_corpus_is_fixed_and_documented():
    s = embedded_sentences()
    assert len(s) == 4000 and s == embedded_sentences() and len(set(s)) == 3763
    d = load_data("text")
    assert d.train.shape == (3600, 17) and d.test.shape == (400, 17)
    assert len(d.vocab) == 208 and not bool((d.train == UNK).any())
    assert torch.equal(d.train, load_data("text", seed=5).train)   # fixed split
    assert "3600 train / 400 test" in d.description


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    d = load_text(sentences=["a b c", "b c", "c a b ."], test_fraction=0.0)
    v = 7
    log_px = -lengths(d.train).double() * math.log(v)   # every token has probability 1/v
    assert perplexity(log_px, d.train) == pytest.approx(v, rel=1e-12)
