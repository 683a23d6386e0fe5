"""A character-level tokenizer built locally, with a chat template.

Tiny models learn arithmetic far faster one character per token, and building the
tokenizer here means no hub download, ever. It is a real `PreTrainedTokenizerFast`
(WordLevel over single characters, special tokens kept whole), so it saves, loads and
applies its chat template exactly like any Hugging Face tokenizer:

    tok = build_char_tokenizer()
    ids = tok.apply_chat_template([{"role": "user", "content": "12+34"}],
                                  add_generation_prompt=True, tokenize=False)
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<|pad|>", "<|end|>", "<|unk|>"
ROLES = ("system", "user", "assistant")
SPECIALS = [PAD, EOS, UNK] + [f"<|{r}|>" for r in ROLES]
# Printable ASCII and newline: enough for every procedural environment's text.
CHARS = ["\n"] + [c for c in string.printable if c not in string.whitespace or c == " "]

# One special token opens each turn and <|end|> closes it; the assistant's <|end|> is
# also EOS, so a completion that stops cleanly ends with it.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), "isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(SPECIALS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK,
        padding_side="left", clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
