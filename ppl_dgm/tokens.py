"""The token-id convention shared by text data and sequence models (a bottom layer).

Sentences are stored as rows of token ids, ``(N, max_len + 1)``: the words, then one
end-of-sentence token, then padding.  The first four ids are reserved:

=====  =======  ==============================================================
id     token    meaning
=====  =======  ==============================================================
0      ``<pad>``  padding after the end of a sentence (never generated)
1      ``<bos>``  the decoder's first input (never generated, never stored)
2      ``<eos>``  end of sentence; every stored sentence has exactly one
3      ``<unk>``  a word outside the vocabulary (or dropped by word dropout)
=====  =======  ==============================================================

Rows are float32 like every other data set of the package (token ids are exact in
float32 below 2**24), so :func:`ppl_dgm.train.fit` slices minibatches of them as it
slices images; models cast them to ``long``.  Everything else -- the mask, the lengths,
the number of tokens -- follows from the padding, so nothing else travels with a batch.
"""

from __future__ import annotations

import torch

__all__ = ["BOS", "EOS", "PAD", "SPECIALS", "UNK", "lengths", "token_mask"]

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


def token_mask(x: torch.Tensor) -> torch.Tensor:
    """``True`` at the positions that hold a token (words and the end token)."""
    return x != PAD


def lengths(x: torch.Tensor) -> torch.Tensor:
    """Tokens per sentence, the end token included, shape ``x.shape[:-1]``."""
    return token_mask(x).sum(-1)
