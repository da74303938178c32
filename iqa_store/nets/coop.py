"""CoOp context prompts (Zhou et al. 2022) in CLIP-IQA+'s layout: learned tokens around the class words.

CLIP-IQA+ (IceClear/CLIP-IQA ``coopclipiqa.py``) learns ONE context of ``n`` token embeddings
shared by its two prompts, with the class words in the middle (``class_token_position='middle'``).
Its prompt strings are ``"X X ... X " + name + "."`` with the names "Good photo." and "Bad photo.";
the name's length is counted on the name alone (3 tokens: good, photo, "."), and the class words
are the 3 tokens after the placeholders in the whole string. CLIP's BPE reads "photo.." as
"photo" + "..", so those 3 tokens are good, photo, ".." and the prompt is::

    [SOS] ctx[0:n/2] good photo .. ctx[n/2:n] [EOS] padding

(not "good photo ." ctx "." as one might read the code; the test checks it against CLIP's own
tokeniser). The text tower then runs as CLIP's ``encode_text``, pooled at the EOS token.
Shared by the ``clipiqa-plus`` training stage and extractor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import torch

N_CONTEXT = 16
PLACEHOLDER = "X"


@dataclass(frozen=True)
class CoopPrompts:
    """The tokenised prompt strings and how many tokens each class name takes."""

    tokens: "torch.Tensor"  # [C, context_length] ids of "X X ... X {name}."
    name_lengths: tuple[int, ...]
    n_context: int


def coop_prompts(tokenizer: Any, names: Sequence[str], n_context: int = N_CONTEXT) -> CoopPrompts:
    """The prompts of ``names`` (e.g. "Good photo.", "Bad photo.") around ``n_context`` placeholders."""
    if n_context < 2 or n_context % 2:
        raise ValueError(f"the context must have an even number of tokens (half before the name), not {n_context}")
    prefix = " ".join([PLACEHOLDER] * n_context)
    tokens = tokenizer([f"{prefix} {name}." for name in names])
    lengths = tuple(int((tokenizer([name])[0] != 0).sum()) - 2 for name in names)  # without SOS and EOS
    return CoopPrompts(tokens, lengths, n_context)


def coop_text_features(model: Any, prompts: CoopPrompts, context: "torch.Tensor") -> "torch.Tensor":
    """L2-normalised text features [C, D] of the prompts with ``context`` [n, width] in the middle layout."""
    import torch
    import torch.nn.functional as F
    cast_dtype = model.transformer.get_cast_dtype()
    tokens = prompts.tokens.to(context.device)
    embedded = model.token_embedding(tokens).to(cast_dtype)  # [C, L, width]
    half, n = prompts.n_context // 2, prompts.n_context
    rows = []
    for row, length in enumerate(prompts.name_lengths):
        name = embedded[row, 1 + n:1 + n + length]
        rest = embedded[row, 1 + n + length:]
        rows.append(torch.cat([embedded[row, :1], context[:half].to(cast_dtype), name, context[half:].to(cast_dtype),
                               rest]))
    x = torch.stack(rows) + model.positional_embedding.to(cast_dtype)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # EOS: the largest id, same place
    projection = model.text_projection
    x = projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection
    return F.normalize(x, dim=-1)
