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
