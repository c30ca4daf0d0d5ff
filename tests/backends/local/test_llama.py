"""The tokenizer's special-token split, done in pieces so that it stays linear (issue 10, item 1)."""

from __future__ import annotations

from chatgate.backends.local import llama
from chatgate.backends.local.llama import GGUFModel


def _whole(model: GGUFModel, text: str, add_special: bool) -> list[int]:
    """llama.cpp's tokenizer over the whole text at once (quadratic in its special tokens)."""
    return model._tokenize(text, add_special=add_special, parse_special=True)


def test_pieces_give_the_same_tokens_as_the_whole_text(vocab: GGUFModel) -> None:
    turns = "".join(
        f"<|im_start|>{'user' if i % 2 else 'assistant'}\n{'a' * (i % 7)} <|im_end|>x\n" for i in range(300)
    )
    text = "<|im_start|>system\nYou are helpful.<|im_end|>\n" + turns + "<|im_start|>assistant\n"
    assert text.count("<|im_end|>") > 10 * llama.SPECIALS_PER_CALL
    for add_special in (True, False):
        assert vocab.tokenize(text, add_special=add_special) == _whole(vocab, text, add_special)
    plain = "no special token here " * 50
    assert vocab.tokenize(plain, add_special=True) == _whole(vocab, plain, True)
    assert vocab.tokenize(text, add_special=False, parse_special=False) == vocab._tokenize(
        text, add_special=False, parse_special=False
    )


def test_the_text_is_cut_only_before_special_tokens(vocab: GGUFModel) -> None:
    text = "<|im_end|>" * (3 * llama.SPECIALS_PER_CALL + 1)
    cuts = vocab._cuts(text)
    assert len(cuts) == 3
    assert all(text.startswith("<|im_end|>", cut) for cut in cuts)
