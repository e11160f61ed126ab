"""The decode workload times exactly the work it claims, with the options users pass."""

from collections import namedtuple

import pytest
import torch

from workloads.decode import DecodePoint, DecodeWorkload, GenerationOptions, check_point, summarize
from workloads.errors import UserError
from workloads.precision import parse_precision
from workloads.presets import resolve_model

CPU = torch.device("cpu")


def workload(options=GenerationOptions(), name="tiny-llama", dtype="fp32"):
    w = DecodeWorkload(resolve_model(name), parse_precision(dtype), CPU, "sdpa", options, seed=1)
    w.setup()
    return w


def test_one_mark_per_new_token(clock_class):
    w = workload()
    point = DecodePoint(2, 9, 6)
    timeline = w.run(point, w.prompt(point, 0), clock_class())
    assert len(timeline.ticks_ms) == 6
    assert all(a <= b for a, b in zip(timeline.ticks_ms, timeline.ticks_ms[1:]))
    assert 0 < timeline.ticks_ms[0] and timeline.ticks_ms[-1] <= timeline.end_ms


def test_prompts_fresh_per_call_and_equal_across_precisions():
    point = DecodePoint(1, 16, 2)
    a, b = workload(), workload(dtype="bf16")
    assert not torch.equal(a.prompt(point, 0), a.prompt(point, 1))
    assert torch.equal(a.prompt(point, 0), b.prompt(point, 0))


@pytest.mark.parametrize("options", [
    GenerationOptions(cache="static"),
    GenerationOptions(do_sample=True, temperature=0.7, top_k=20, top_p=0.9),
    GenerationOptions(num_beams=2, repetition_penalty=1.2),
], ids=["static", "sampling", "beams"])
def test_generation_options_run_the_full_length(options, clock_class):
    w = workload(options, name="tiny-opt")
    point = DecodePoint(1, 5, 4)
    assert len(w.run(point, w.prompt(point, 0), clock_class()).ticks_ms) == 4
    config = w.generation_config(point)
    assert config.cache_implementation == options.cache and config.num_beams == options.num_beams
    assert config.eos_token_id is None


def test_wrong_amount_of_work_is_refused(clock_class):
    w = workload()
    point = DecodePoint(1, 4, 5)

    class SkippingClock(clock_class):
        def tick(self):  # loses every other mark
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls % 2:
                super().tick()

    with pytest.raises(RuntimeError, match="refusing to report"):
        w.run(point, w.prompt(point, 0), SkippingClock())


def test_cost_counts_beams_as_sequences():
    point = DecodePoint(2, 8, 4)
    single = workload().cost(point).details
    beams = workload(GenerationOptions(num_beams=3)).cost(point).details
    assert beams["kv_read_bytes_per_step"] == 3 * single["kv_read_bytes_per_step"]
    assert single["decode_steps"] == 3
    assert single["bytes_per_step"] == single["decode_bytes"] / 3


@pytest.mark.parametrize("point, message", [
    (DecodePoint(0, 8, 4), "--batch-size"),
    (DecodePoint(1, -3, 4), "--prompt-len"),
    (DecodePoint(1, 8, 1), "--new-tokens must be at least 2"),
    (DecodePoint(1, 500, 20), "exceeds tiny-llama's 512 positions"),
])
def test_bad_points(point, message):
    with pytest.raises(UserError, match=message):
        check_point(resolve_model("tiny-llama"), point)


def test_option_validation():
    with pytest.raises(UserError, match="needs --device cuda"):
        GenerationOptions(cache="offloaded").validate(CPU)
    with pytest.raises(UserError, match="--top-p"):
        GenerationOptions(do_sample=True, top_p=1.5).validate(CPU)
    with pytest.raises(UserError, match="unknown cache"):
        GenerationOptions(cache="paged-ish").validate(CPU)
    assert not GenerationOptions(cache="static").compiled(CPU)


def test_summarize_by_hand():
    Timeline = namedtuple("Timeline", "ticks_ms end_ms")
    # two generations of 4 tokens, batch 2: first token at 10 ms, then steps of 2, 2, 4 ms (and 1, 1, 1)
    timelines = [Timeline([10.0, 12.0, 14.0, 18.0], 19.0), Timeline([20.0, 21.0, 22.0, 23.0], 23.5)]
    m = summarize(timelines, DecodePoint(batch_size=2, prompt_len=5, new_tokens=4))
    assert m["ttft_ms"] == 15.0
    assert m["decode_ms"] == pytest.approx(5.5)  # median of 8 and 3
    assert m["tokens_per_s"] == pytest.approx((2 * 3 / 0.008 + 2 * 3 / 0.003) / 2)
    assert m["tpot_ms_p50"] == pytest.approx(1.5)
    assert m["e2e_ms"] == pytest.approx(21.25)
    assert m["decode_steps_timed"] == 6 and m["repeats"] == 2


# --- Decode never stops early (issue 13, part 7) -------------------------------------------------------------------
# transformers 5.x fills an unset eos_token_id from the model's own generation config, so a preset's EOS token
# (every tiny preset defines one) would end generate() as soon as random weights emit it. These models do emit it:
# either the LM head is biased towards the preset's EOS, or the preset's EOS is set to a token greedy decoding makes.

def eos_biased(w):
    """Make the preset's EOS the most likely token at every position (every sequence emits it at once)."""
    eos = w.spec.config.eos_token_id
    bias = torch.zeros(w.model.config.vocab_size)
    bias[eos] = 1e4
    w.model.get_output_embeddings().register_forward_hook(lambda module, args, out: out + bias.to(out))
    return eos


def generated(w):
    """The token ids of every generate() call of ``w``'s model, appended as they come."""
    made, generate = [], w.model.generate
    w.model.generate = lambda *args, **kwargs: made.append(generate(*args, **kwargs)) or made[-1]
    return made


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-opt", "tiny-gpt2"])
@pytest.mark.parametrize("engine, options", [
    ("hf", GenerationOptions()),
    ("hf", GenerationOptions(cache="static")),
    ("hf-static", GenerationOptions()),
], ids=["dynamic", "static", "hf-static"])
def test_preset_eos_never_stops_generate(name, engine, options, clock_class):
    spec = resolve_model(name)
    assert spec.config.eos_token_id is not None
    w = DecodeWorkload(spec, parse_precision("fp32"), CPU, "sdpa", options, seed=1, engine=engine)
    w.setup()
    eos = eos_biased(w)
    prompt = w.prompt(DecodePoint(2, 8, 2), 0)
    assert (w.model(prompt).logits[:, -1].argmax(-1) == eos).all()  # the model does emit EOS
    point = DecodePoint(2, 8, 120)
    made = generated(w)
    assert len(w.run(point, w.prompt(point, 0), clock_class()).ticks_ms) == 120
    assert (made[0][:, 8:] == eos).all()  # the model's own tokens: no EOS check, no processor masking it


@pytest.mark.parametrize("options", [
    GenerationOptions(do_sample=True, temperature=0.7, top_k=20),
    GenerationOptions(num_beams=2),
], ids=["sampling", "beams"])
def test_preset_eos_never_stops_sampling_or_beams(options, clock_class):
    w = workload(options)
    eos = eos_biased(w)
    point = DecodePoint(1, 8, 100)
    made = generated(w)
    assert len(w.run(point, w.prompt(point, 0), clock_class()).ticks_ms) == 100
    assert (made[0][:, 8:] == eos).all()


def greedy_tokens(model, ids, steps):
    """Greedy decoding by hand (no generate(), no cache): the tokens the model itself makes."""
    with torch.inference_mode():
        for _ in range(steps):
            ids = torch.cat([ids, model(ids).logits[:, -1:].argmax(-1)], dim=1)
    return ids[:, -steps:]


@pytest.mark.parametrize("engine", ["hf", "hf-static"])
def test_eos_that_random_weights_emit_mid_generation(engine, clock_class):
    """The issue's case: tiny-llama, 32-token prompt, 100 new tokens, the preset's EOS emitted after ~60."""
    import copy
    import dataclasses

    point = DecodePoint(1, 32, 100)
    probe = workload()
    made = greedy_tokens(probe.model, probe.prompt(point, 0), 60)
    eos = int(made[0, -1])  # a token greedy decoding emits by step 60 (or earlier)
    spec = resolve_model("tiny-llama")
    config = copy.deepcopy(spec.config)
    config.eos_token_id = eos
    w = DecodeWorkload(dataclasses.replace(spec, config=config), parse_precision("fp32"), CPU, "sdpa",
                       GenerationOptions(), seed=1, engine=engine)
    w.setup()
    assert w.model.generation_config.eos_token_id == eos  # what generate() would fall back to
    assert len(w.run(point, w.prompt(point, 0), clock_class()).ticks_ms) == 100
    assert w.generation_config(point).min_new_tokens == 100
