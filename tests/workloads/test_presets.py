"""Presets carry the public architectures; local checkpoints load offline, safetensors only."""

import json

import pytest
import torch

from workloads.errors import UserError
from workloads.presets import PRESET_DIR, build_model, meta_model, preset_names, resolve_model

# Parameter counts published with each checkpoint (embeddings counted once when tied).
PUBLIC_PARAMS = {
    "gpt2": 124_439_808,
    "opt-125m": 125_239_296,
    "opt-1.3b": 1_315_758_080,
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.2-3b": 3_212_749_824,
    "llama-3.1-8b": 8_030_261_248,
    "qwen2.5-0.5b": 494_032_768,
    "qwen2.5-1.5b": 1_543_714_304,
    "qwen2.5-7b": 7_615_616_512,
    "mistral-7b": 7_248_023_552,
    "mixtral-8x7b": 46_702_792_704,
    "llama-3.1-70b": 70_553_706_496,
    "qwen2.5-72b": 72_706_203_648,
}


def n_params(name):
    return sum(p.numel() for p in meta_model(resolve_model(name)).parameters())


def test_required_presets_exist():
    required = {"gpt2", "opt-125m", "opt-1.3b", "llama-3.2-1b", "llama-3.1-8b", "qwen2.5-0.5b", "mistral-7b"}
    assert required <= set(preset_names())
    assert {"tiny-llama", "tiny-opt", "tiny-gpt2"} <= set(preset_names())


@pytest.mark.parametrize("name", sorted(PUBLIC_PARAMS))
def test_parameter_count_matches_public_checkpoint(name):
    assert n_params(name) == PUBLIC_PARAMS[name]


def test_headline_sizes_within_one_percent():
    assert n_params("llama-3.2-1b") == pytest.approx(1.24e9, rel=0.01)
    assert n_params("opt-1.3b") == pytest.approx(1.3e9, rel=0.02)
    assert n_params("opt-1.3b") == pytest.approx(1.316e9, rel=0.01)


def test_unknown_preset_suggests_close_names():
    with pytest.raises(UserError, match="llama-3.2-1b"):
        resolve_model("llama-3.2-1")


def test_random_build_ties_and_initialises():
    spec = resolve_model("tiny-llama")
    a = build_model(spec, torch.float32, torch.device("cpu"), "sdpa", seed=3)
    b = build_model(spec, torch.float32, torch.device("cpu"), "sdpa", seed=3)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    q = a.model.layers[0].self_attn.q_proj.weight
    assert 0.015 < q.std().item() < 0.025
    assert torch.all(a.model.norm.weight == 1)
    assert not a.training
    tied = build_model(resolve_model("tiny-opt"), torch.bfloat16, torch.device("cpu"), "eager")
    assert tied.lm_head.weight is tied.model.decoder.embed_tokens.weight
    assert tied.lm_head.weight.dtype == torch.bfloat16


@pytest.fixture()
def checkpoint(tmp_path):
    model = build_model(resolve_model("tiny-llama"), torch.float32, torch.device("cpu"), "sdpa")
    model.save_pretrained(tmp_path / "tiny", safe_serialization=True)
    return tmp_path / "tiny", model


def test_local_checkpoint_loads_its_own_weights(checkpoint):
    path, original = checkpoint
    spec = resolve_model(str(path))
    assert spec.name == "tiny" and spec.path == path.resolve() and not spec.random_weights
    loaded = build_model(spec, torch.float32, torch.device("cpu"), "sdpa")
    for (name, a), b in zip(original.named_parameters(), loaded.parameters()):
        assert torch.equal(a, b), name


def test_path_without_safetensors_is_refused(checkpoint):
    path, _ = checkpoint
    for f in path.glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    with pytest.raises(UserError, match="no \\*.safetensors"):
        resolve_model(str(path))


def test_remote_code_is_refused(checkpoint):
    path, _ = checkpoint
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_x.X"}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="remote code"):
        resolve_model(str(path))


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "file.txt").write_text("x") and p / "file.txt", "not a directory"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no config.json"),
])
def test_bad_paths(tmp_path, make, message):
    with pytest.raises(UserError, match=message):
        resolve_model(str(make(tmp_path)))


def test_tiny_mixtral_builds_all_experts_at_random():
    spec = resolve_model("tiny-mixtral")
    model = build_model(spec, torch.float32, torch.device("cpu"), "sdpa", seed=3)
    experts = model.model.layers[0].mlp.experts
    assert experts.gate_up_proj.shape == (8, 2 * 96, 64) and experts.down_proj.shape == (8, 64, 96)
    assert 0.015 < experts.gate_up_proj.std().item() < 0.025  # 3-D expert tensors are drawn too, not left empty
    assert spec.config.num_experts_per_tok == 2


def test_moe_checkpoint_it_cannot_count_is_refused_before_loading(tmp_path):
    path = tmp_path / "moe"
    path.mkdir()
    config = json.loads((PRESET_DIR / "tiny-mixtral.json").read_text())["config"]
    (path / "config.json").write_text(json.dumps({**config, "num_experts_per_tok": 9}))
    (path / "model.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")  # an empty but valid file
    with pytest.raises(UserError, match="mixture-of-experts .* num_experts_per_tok=9 is not k of n"):
        resolve_model(str(path))
    (path / "config.json").write_text(json.dumps(config))
    assert resolve_model(str(path)).config.num_local_experts == 8


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "config.json").write_text("{bad"), "config.json is not valid JSON"),
    (lambda p: (p / "config.json").write_bytes(b"\xff\xfe"), "config.json is not valid JSON"),
    (lambda p: (p / "config.json").write_text("[]"), "is not a JSON object"),
    (lambda p: (p / "config.json").write_text("{}"), "cannot read .*config.json"),
    (lambda p: (p / "model.safetensors").write_bytes(b""), "is not a safetensors file"),
    (lambda p: (p / "model.safetensors").write_text("garbage weights"), "is not a safetensors file"),
    (lambda p: (p / "model.safetensors").write_bytes((10**9).to_bytes(8, "little") + b"{}"),
     "is not a safetensors file"),
])
def test_damaged_checkpoints_are_refused_in_one_line(checkpoint, damage, message):
    path, _ = checkpoint
    damage(path)
    with pytest.raises(UserError, match=message) as exc:
        resolve_model(str(path))
    assert "\n" not in str(exc.value)
