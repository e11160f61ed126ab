"""What the kernel tests share: every output buffer a wrapper allocates starts as NaN, so an element a
kernel forgets to write fails the comparison instead of passing on leftover memory."""

import pytest
import torch


@pytest.fixture
def poisoned_outputs(monkeypatch):
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def fill(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: fill(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: fill(real_empty_like(*a, **k)))
