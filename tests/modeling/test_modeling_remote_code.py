"""A saved checkpoint loads as Hub remote code in a fresh interpreter where ``mmsa_hf`` cannot be imported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import torch

from mmsa_hf.modeling import MMSAForPreTraining
from mmsa_hf.modeling.testing_utils import make_random_batch

from mmsa_modeling_testutils import tiny_config


CHILD = r'''
import importlib.abc, importlib.util, sys

class BlockMMSA(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "mmsa_hf" or name.startswith("mmsa_hf."):
            raise ImportError("mmsa_hf is blocked in this test")

sys.meta_path.insert(0, BlockMMSA())
try:
    import mmsa_hf  # noqa: F401
    raise SystemExit("mmsa_hf should not be importable here")
except ImportError:
    pass

import torch
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoModelForSequenceClassification

root = sys.argv[1]
config = AutoConfig.from_pretrained(root + "/ckpt", trust_remote_code=True)
assert type(config).__name__ == "MMSAConfig" and type(config).__module__.startswith("transformers_modules"), type(config)
model = AutoModel.from_pretrained(root + "/ckpt", trust_remote_code=True).eval()
assert type(model).__name__ == "MMSAModel", type(model)
batch = torch.load(root + "/batch.pt", weights_only=False)
reference = torch.load(root + "/reference.pt")
with torch.no_grad():
    out = model(**batch).unified_embedding
assert torch.equal(out, reference), (out - reference).abs().max()
pretraining = AutoModelForPreTraining.from_pretrained(root + "/ckpt", trust_remote_code=True)
assert type(pretraining).__name__ == "MMSAForPreTraining"
head = AutoModelForSequenceClassification.from_pretrained(root + "/ckpt", trust_remote_code=True, num_labels=2)
assert type(head).__name__ == "MMSAForMolecularPropertyPrediction"
assert "mmsa_hf" not in sys.modules
print("REMOTE-CODE-OK")
'''


def test_remote_code_load_without_mmsa_hf(tmp_path):
    model = MMSAForPreTraining(tiny_config()).eval()
    model.save_pretrained(tmp_path / "ckpt")
    saved = sorted(os.listdir(tmp_path / "ckpt"))
    for name in ("configuration_mmsa.py", "modeling_mmsa.py", "encoder_graph.py", "encoder_image.py",
                 "encoder_geometry.py", "fusion.py", "hypergraph.py", "memory.py", "heads.py", "losses.py",
                 "outputs.py", "model.safetensors", "config.json"):
        assert name in saved, saved
    auto_map = json.loads((tmp_path / "ckpt" / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForPreTraining", "AutoModelForSequenceClassification"}

    batch = make_random_batch(num_molecules=3, num_placeholders=1, seed=11)
    torch.save(batch, tmp_path / "batch.pt")
    with torch.no_grad():
        torch.save(model.mmsa(**batch).unified_embedding, tmp_path / "reference.pt")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TRANSFORMERS_VERBOSITY="error")
    work = tmp_path / "cwd"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "REMOTE-CODE-OK" in result.stdout
    shutil.rmtree(tmp_path / "modules", ignore_errors=True)
