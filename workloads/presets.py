"""Model presets: real architectures stored as config data, built with random weights.

Each ``presets/<name>.json`` holds the public Hugging Face config numbers of one
architecture (plus where they come from). Building one never downloads anything:
the config becomes a model via ``from_config`` and its weights are drawn at
random. A local model directory (an offline copy of a real checkpoint) works in
place of a preset name; it must hold ``config.json`` and safetensors weights, and
code from the hub is never run.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig
from transformers.initialization import no_init_weights

from workloads import cost
from workloads.errors import UserError

PRESET_DIR = Path(__file__).with_name("presets")
INIT_STD = 0.02  # the initializer_range every preset's family uses


@dataclass(frozen=True)
class ModelSpec:
    """A model to build: a preset name (random weights) or a local checkpoint path."""

    name: str  # preset name, or the directory name of a local checkpoint
    config: PretrainedConfig
    path: Path | None = None  # set for a local checkpoint
    source: str | None = None  # public repo the preset's numbers come from
    description: str = ""

    @property
    def random_weights(self) -> bool:
        return self.path is None

    @property
    def max_positions(self) -> int:
        return int(self.config.max_position_embeddings)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


@cache
def _read_preset(name: str) -> dict:
    return json.loads((PRESET_DIR / f"{name}.json").read_text())


def _looks_like_path(model: str) -> bool:
    try:
        return os.sep in model or model.startswith((".", "~")) or Path(model).exists()
    except OSError:  # a name longer than the file system allows is no folder here
        return True


def resolve_model(model: str) -> ModelSpec:
    """Turn ``--model`` (preset name or local directory) into a spec, or explain why not."""
    if _looks_like_path(model):
        try:
            return _local_spec(Path(model).expanduser())
        except (OSError, RuntimeError) as exc:  # an unknown ~user, a name too long for the file system
            raise UserError(f"--model {model[:80]!r} is not a readable model folder: "
                            f"{getattr(exc, 'strerror', None) or exc}") from None
    if model not in preset_names():
        close = difflib.get_close_matches(model, preset_names(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserError(
            f"unknown model preset {model!r}.{hint} Run `llmbench models` for the list, "
            "or pass a path to a local model directory."
        )
    data = _read_preset(model)
    fields = dict(data["config"])
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    return _countable(ModelSpec(model, config, source=data.get("source"), description=data.get("description", "")))


def _countable(spec: ModelSpec) -> ModelSpec:
    """Refuse, before anything is built, a mixture-of-experts model whose layout the cost model cannot count
    (``workloads.cost.model_shape`` says what is wrong); dense configs pass without a look."""
    text = spec.config.get_text_config()
    if all(getattr(text, name, None) in (None, 0, 1) for name in cost.EXPERT_COUNT_FIELDS):
        return spec
    try:
        model = meta_model(spec)
    except Exception:  # an architecture that cannot be built fails later, with its own message
        return spec
    cost.model_shape(model)
    return spec


def _local_spec(path: Path) -> ModelSpec:
    if not path.exists():
        raise UserError(f"model path {path} does not exist")
    if not path.is_dir():
        raise UserError(f"model path {path} is not a directory; pass the folder holding config.json")
    if not (path / "config.json").is_file():
        raise UserError(f"{path} has no config.json; is it a Hugging Face model directory?")
    if not any(path.glob("*.safetensors")):
        others = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
        found = f" (found {', '.join(others[:3])})" if others else ""
        raise UserError(
            f"{path} has no *.safetensors weights{found}; llmbench loads safetensors only. "
            "Convert with `model.save_pretrained(dir, safe_serialization=True)`."
        )
    try:
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path / 'config.json'} is not valid JSON ({str(exc).splitlines()[0][:120]}); "
                        "copy the checkpoint's config.json again") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path / 'config.json'} is not a JSON object; copy the checkpoint's config.json again")
    for weights in sorted(path.glob("*.safetensors")):
        _check_safetensors(weights)
    if "auto_map" in raw:
        raise UserError(f"{path} needs custom code from the hub (auto_map in config.json); llmbench never runs remote code")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except (ValueError, KeyError, OSError) as exc:
        reason = " ".join(str(exc).split())[:300]  # one line, whatever transformers wrote
        raise UserError(f"cannot read {path / 'config.json'}: {reason}") from None
    return _countable(ModelSpec(path.resolve().name, config, path=path.resolve()))


def _check_safetensors(path: Path) -> None:
    """A safetensors file starts with an 8-byte little-endian header length and that many bytes of JSON;
    an empty, truncated or garbage file is refused here instead of failing every point later."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            size = int.from_bytes(head, "little") if len(head) == 8 else -1
            header = handle.read(size) if 0 < size <= path.stat().st_size - 8 else b""
        ok = isinstance(json.loads(header), dict) if header else False
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        ok = False
    if not ok:
        raise UserError(f"{path} is not a safetensors file (empty, truncated or another format); copy the "
                        "checkpoint's weights again")


def build_model(spec: ModelSpec, dtype: torch.dtype, device: torch.device, attn: str, seed: int = 0):
    """The model in eval mode on ``device``: random weights for a preset, the checkpoint's for a path.

    Random weights are drawn on the device itself in the target dtype (normal with
    the families' 0.02 std for matrices, ones for norm scales, zeros for biases),
    which is much faster than transformers' per-module init and never needs an
    fp32 copy of a large model.
    """
    if attn == "triton":
        from workloads.attention import register

        register()
    if spec.path is not None:
        model = AutoModelForCausalLM.from_pretrained(
            spec.path,
            dtype=dtype,
            attn_implementation=attn,
            use_safetensors=True,
            local_files_only=True,
            trust_remote_code=False,
        )
        return model.to(device).eval()
    torch.manual_seed(seed)
    # from_config keeps the config object and records the attention implementation on it: a private copy
    # keeps models built from one spec (eager next to triton, bf16 next to fp32) independent.
    with torch.device(device), no_init_weights():
        model = AutoModelForCausalLM.from_config(copy.deepcopy(spec.config), dtype=dtype, attn_implementation=attn)
    model.tie_weights()  # skipped along with the init; tied presets must share their LM head
    with torch.no_grad():
        for name, param in model.named_parameters():
            init_parameter(name, param)
    return model.eval()


def init_parameter(name: str, tensor: torch.Tensor) -> None:
    """The random-weights rule, in place: matrices N(0, INIT_STD), biases 0, norm scales 1 (the tensor
    parallel build draws the same stream through it, parameter by parameter)."""
    if tensor.ndim >= 2:
        tensor.normal_(0.0, INIT_STD)
    elif name.endswith("bias"):
        tensor.zero_()
    else:
        tensor.fill_(1.0)


def meta_model(spec: ModelSpec):
    """The architecture with no storage: for parameter counts and cost models."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(spec.config)
