"""``llmbench models``: every preset, in every output format."""

import json

import pytest

from harness import cli


def test_models_lists_presets_in_every_format(capsys):
    assert cli.main(["models"]) == 0
    table = capsys.readouterr().out
    for name in ("gpt2", "opt-1.3b", "llama-3.2-1b", "llama-3.1-8b", "qwen2.5-0.5b", "mistral-7b", "tiny-llama"):
        assert name in table
    assert cli.main(["models", "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["llama-3.2-1b"]["params"] == 1_235_814_400
    assert rows["llama-3.2-1b"]["bf16_gb"] == pytest.approx(2.4716, abs=1e-3)
    assert cli.main(["models", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("name,family,params")
