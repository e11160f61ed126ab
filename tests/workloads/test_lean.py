"""The lean decode engine: greedy tokens equal generate()'s, on-device sampling, unsupported options refused."""

import pytest
import torch

from workloads.decode import GenerationOptions
from workloads.errors import UserError
from workloads.lean import LeanEngine, check_options, select
from workloads.presets import build_model, resolve_model

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def prompt(batch, length, seed=0):
    return torch.randint(3, 512, (batch, length), generator=torch.Generator().manual_seed(seed)).to(DEVICE)


@pytest.mark.parametrize("name,attn", [("tiny-llama", "sdpa"), ("tiny-opt", "sdpa"), ("tiny-gpt2", "eager"),
                                       ("tiny-llama", "triton")])
def test_greedy_tokens_equal_generate(name, attn, clock_class):
    model = build_model(resolve_model(name), torch.float32, DEVICE, attn, seed=3)
    engine = LeanEngine(model)
    ids = prompt(2, 7, seed=len(name))
    clock = clock_class()
    tokens, timeline = engine.generate(ids, 6, clock)
    model.generation_config.eos_token_id = None  # the reference must not stop or avoid EOS either
    expected = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, min_new_tokens=6,
                              do_sample=False, eos_token_id=None, pad_token_id=0)[:, 7:]
    assert torch.equal(tokens, expected)
    assert len(timeline.ticks_ms) == 6 and timeline.end_ms >= timeline.ticks_ms[-1]
    again, _ = engine.generate(ids, 6, clock)  # the cache is reset, not re-allocated, and starts clean
    assert torch.equal(again, tokens)


def test_sampling_is_seeded_and_respects_top_k():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    greedy = select(logits, False, 1.0, None)
    assert torch.equal(select(logits, True, 1.0, 1), greedy)  # top-1 sampling is greedy
    draws = [select(logits, True, 0.8, 5, torch.Generator().manual_seed(s)) for s in range(20)]
    top5 = torch.topk(logits, 5).indices
    for draw in draws:
        for row, token in enumerate(draw[:, 0]):
            assert token in top5[row]
    assert len({tuple(d.flatten().tolist()) for d in draws}) > 1
    same = select(logits, True, 0.8, None, torch.Generator().manual_seed(7))
    assert torch.equal(same, select(logits, True, 0.8, None, torch.Generator().manual_seed(7)))


@pytest.mark.parametrize("options,flag", [
    (GenerationOptions(num_beams=2), "--num-beams"),
    (GenerationOptions(do_sample=True, top_p=0.9), "--top-p"),
    (GenerationOptions(repetition_penalty=1.2), "--repetition-penalty"),
    (GenerationOptions(cache="offloaded"), "--cache offloaded"),
])
def test_unsupported_options_are_refused(options, flag):
    with pytest.raises(UserError, match=flag):
        check_options(options)
    check_options(GenerationOptions(do_sample=True, temperature=0.7, top_k=20))
