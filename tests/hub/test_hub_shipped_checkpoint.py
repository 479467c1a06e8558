"""`mmsa push` publishes the shipped checkpoint (`checkpoints/mmsa-small`) to the local test Hub, and it loads back
with every committed tensor unchanged."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from mmsa_hf.cli import main

CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "mmsa-small"


def test_mmsa_push_publishes_it_and_it_loads_back(hub, capsys):
    import json

    from mmsa_hf import MMSAForPreTraining
    from mmsa_hf.hub import load_model

    code = main(["push", "--model", str(CHECKPOINT), "--repo-id", "test-user/mmsa-small"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["class"] == "MMSAForPreTraining"
    loaded = load_model("test-user/mmsa-small", model_class=MMSAForPreTraining)
    stored = load_file(str(CHECKPOINT / "model.safetensors"))
    state = loaded.state_dict()
    for key, value in stored.items():
        assert torch.equal(state[key], value), key
