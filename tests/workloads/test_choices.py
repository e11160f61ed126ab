"""The CLI's choices: what transformers and PyTorch offer, and importable without them."""

import subprocess
import sys

import torch
from transformers.generation.configuration_utils import ALL_CACHE_IMPLEMENTATIONS

from workloads import choices


def test_caches_and_sdpa_backends_exist():
    assert set(choices.CACHES) <= set(ALL_CACHE_IMPLEMENTATIONS)
    from torch.nn.attention import SDPBackend

    for member in choices.SDPA_BACKENDS.values():
        assert isinstance(getattr(SDPBackend, member), SDPBackend)
    assert torch.__version__


def test_the_parser_builds_without_torch():
    """`llmbench --help` and `sweep plan` stay fast only while building the parser imports no torch."""
    code = ("import sys; from harness.cli import build_parser; build_parser(); "
            "heavy = [m for m in ('torch', 'transformers', 'numpy') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
