"""Saving and loading keeps the model and, above all, the tokenizer exactly as they were."""

import torch

from rlvr.models import build_tiny_model, load_model, save_model


def test_round_trip_keeps_weights_and_tokenization(tmp_path):
    model, tok = build_tiny_model("micro", seed=0)
    save_model(model, tok, tmp_path / "m")
    loaded, ltok = load_model(tmp_path / "m")
    text = "Compute 457+386. End with #### and the result.\n1:31 2:41 3:80 #### 843"
    # A space-dropping tokenizer here once made every SFT example unreadable to its model.
    assert ltok(text, add_special_tokens=False)["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    messages = [{"role": "user", "content": "a b"}, {"role": "assistant", "content": "c d"}]
    assert ltok.apply_chat_template(messages, tokenize=False) == tok.apply_chat_template(messages, tokenize=False)
    assert ltok.decode(ltok(text)["input_ids"]) == text
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
