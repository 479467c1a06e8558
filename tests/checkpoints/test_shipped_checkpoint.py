"""The pretrained checkpoints shipped in the repository (every folder of `checkpoints/`): each loads exactly, its
processor round-trips, `mmsa embed` gives finite and reproducible embeddings, and it stays within the size budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import mmsa_hf  # noqa: F401  (registers the Auto classes)
from mmsa_hf.cli import main
from transformers import AutoModel, AutoProcessor

CHECKPOINTS = sorted(p.parent for p in (Path(__file__).resolve().parents[2] / "checkpoints").glob("*/config.json"))
SMILES = ["CCO", "c1ccccc1O", "CC(=O)Oc1ccccc1C(=O)O", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "c1ccncc1",
          "CC(C)Cc1ccc(cc1)C(C)C(=O)O", "OC(=O)CCC(=O)O", "Clc1ccc(Cl)cc1", "C1CCNCC1", "CC#N"]


@pytest.fixture(params=CHECKPOINTS, ids=lambda path: path.name)
def checkpoint(request) -> Path:
    return request.param


def test_the_multi_view_checkpoint_ships():
    assert "mmsa-small" in [path.name for path in CHECKPOINTS]


def test_checkpoint_files_are_present_and_small(checkpoint):
    for name in ("config.json", "model.safetensors", "processor_config.json", "README.md"):
        assert (checkpoint / name).is_file(), name
    total = sum(p.stat().st_size for p in checkpoint.rglob("*") if p.is_file())
    assert total <= 25 * 1024 * 1024


def test_backbone_loads_every_committed_tensor_unchanged(checkpoint):
    model = AutoModel.from_pretrained(checkpoint)
    stored = load_file(str(checkpoint / "model.safetensors"))
    loaded = model.state_dict()
    backbone = {key[len("mmsa."):]: value for key, value in stored.items() if key.startswith("mmsa.")}
    assert backbone, "the checkpoint holds no backbone tensors"
    assert set(backbone) == set(loaded)
    for key, value in backbone.items():
        assert torch.equal(loaded[key], value), key


def test_processor_round_trips(checkpoint, tmp_path):
    processor = AutoProcessor.from_pretrained(checkpoint)
    processor.save_pretrained(tmp_path)
    again = AutoProcessor.from_pretrained(tmp_path)
    assert again.to_dict() == processor.to_dict()
    a, b = processor(SMILES[:3]), again(SMILES[:3])
    assert set(a) == set(b)
    for key in ("atom_features", "edge_index", "pos", "pixel_values"):
        if key in a:  # a graph-only checkpoint's processor computes neither conformers nor depictions
            assert torch.equal(a[key], b[key]), key


def test_embed_gives_finite_identical_embeddings_across_runs(checkpoint, tmp_path):
    source = tmp_path / "molecules.csv"
    source.write_text("smiles\n" + "\n".join(SMILES) + "\n")
    outputs = []
    for run in range(2):
        output = tmp_path / f"emb{run}.npy"
        code = main(["embed", "--model", str(checkpoint), "--input", str(source), "--output", str(output),
                     "--num-proc", "1", "--no-progress"])
        assert code == 0
        outputs.append(np.load(output))
    assert outputs[0].shape[0] == len(SMILES)
    assert np.isfinite(outputs[0]).all()
    np.testing.assert_array_equal(outputs[0], outputs[1])

