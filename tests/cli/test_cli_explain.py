"""Per-atom explanations (``mmsa_hf.explain`` and ``mmsa explain``) on a model fine-tuned to detect a nitro group."""

from __future__ import annotations

import csv
import json
import struct

import numpy as np
import pytest
import torch
from rdkit import Chem

from mmsa_hf import MMSAConfig, MMSAForMolecularPropertyPrediction
from mmsa_hf.cli import main
from mmsa_hf.explain import atom_attributions, explain
from mmsa_hf.processing import MMSAProcessor

NITRO = Chem.MolFromSmarts("[N+](=O)[O-]")
#: label 1 exactly when a nitro group is present; the negatives carry other N / O groups on the same scaffolds
TRAIN = {
    "O=[N+]([O-])c1ccccc1": 1, "c1ccccc1": 0, "Nc1ccccc1": 0, "Cc1ccc([N+](=O)[O-])cc1": 1, "Cc1ccc(C=O)cc1": 0,
    "CCCC[N+](=O)[O-]": 1, "CCCCN": 0, "CCCCO": 0, "O=[N+]([O-])c1ccncc1": 1, "c1ccncc1": 0, "N#Cc1ccncc1": 0,
    "OCc1ccc([N+](=O)[O-])cc1": 1, "OCc1ccccc1": 0, "NC(=O)c1ccccc1": 0, "CC(C)[N+](=O)[O-]": 1, "CC(C)O": 0,
    "CC(=O)N": 0, "O=[N+]([O-])c1ccc2ccccc2c1": 1, "c1ccc2ccccc2c1": 0, "Oc1ccc2ccccc2c1": 0,
    "ClCC[N+](=O)[O-]": 1, "ClCCCl": 0, "ClCCN": 0, "O=C(O)c1ccc([N+](=O)[O-])cc1": 1, "O=C(O)c1ccccc1": 0,
    "O=C(O)c1ccc(N)cc1": 0, "CN(C)c1ccc([N+](=O)[O-])cc1": 1, "CN(C)c1ccccc1": 0, "CC(=O)Oc1ccccc1": 0,
}
HELD_OUT = ["CCc1ccc([N+](=O)[O-])cc1", "O=[N+]([O-])CCCO", "Clc1ccc([N+](=O)[O-])cc1"]


def _batch(processor, smiles):
    return processor(smiles, views=("graph",))


@pytest.fixture(scope="module")
def nitro_model(tmp_path_factory):
    torch.manual_seed(0)
    config = MMSAConfig.from_preset("tiny", num_labels=1, downstream_modalities=["graph"], use_image=False,
                                    use_geometry=False, id2label={0: "nitro"}, label2id={"nitro": 0})
    model = MMSAForMolecularPropertyPrediction(config)
    processor = MMSAProcessor(views=("graph",))
    batch = _batch(processor, list(TRAIN))
    labels = torch.tensor(list(TRAIN.values()), dtype=torch.float32)[:, None]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(200):
        optimizer.zero_grad()
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
    model.eval()
    folder = tmp_path_factory.mktemp("nitro_model")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor, folder


def _nitro_atoms(smiles: str) -> set[int]:
    return {i for match in Chem.MolFromSmiles(smiles).GetSubstructMatches(NITRO) for i in match}


def test_the_model_learned_the_substructure(nitro_model):
    model, processor, _ = nitro_model
    with torch.no_grad():
        probabilities = model(**_batch(processor, list(TRAIN) + HELD_OUT)).predictions[:, 0]
    expected = torch.tensor(list(TRAIN.values()) + [1] * len(HELD_OUT), dtype=torch.bool)
    assert torch.equal(probabilities > 0.5, expected), probabilities


def test_nitro_atoms_get_the_highest_attributions(nitro_model):
    model, processor, _ = nitro_model
    molecules = [s for s, y in TRAIN.items() if y == 1] + HELD_OUT
    for e in atom_attributions(model, processor, molecules):
        values, nitro = e.attributions["nitro"], _nitro_atoms(e.smiles)
        others = [i for i in range(len(values)) if i not in nitro]
        assert int(np.argmax(values)) in nitro, (e.smiles, values.round(3).tolist())
        assert values[sorted(nitro)].mean() > values[others].mean(), (e.smiles, values.round(3).tolist())
    benzene = atom_attributions(model, processor, "c1ccccc1")[0].attributions["nitro"]
    assert np.allclose(benzene, benzene[0], atol=1e-5)  # symmetric atoms, equal attributions


def test_one_value_per_heavy_atom_in_rdkit_order_and_deterministic(nitro_model):
    model, processor, _ = nitro_model
    smiles = ["OCc1ccc([N+](=O)[O-])cc1", "[Na+].[Cl-]", "C"]
    first, second = atom_attributions(model, processor, smiles), atom_attributions(model, processor, smiles)
    for s, a, b in zip(smiles, first, second):
        mol = Chem.MolFromSmiles(s)
        assert a.atom_symbols == [atom.GetSymbol() for atom in mol.GetAtoms()]
        assert a.attributions["nitro"].shape == (mol.GetNumHeavyAtoms(),)
        np.testing.assert_array_equal(a.attributions["nitro"], b.attributions["nitro"])
    bad = atom_attributions(model, processor, ["not a smiles"])[0]
    assert bad.valid is False and "unparsable" in bad.error and bad.attributions == {}
    with pytest.raises(ValueError, match="not outputs of this model"):
        atom_attributions(model, processor, "CCO", tasks=["solubility"])


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_explain_writes_pictures_and_numbers(nitro_model, tmp_path):
    model, processor, _ = nitro_model
    explanations = explain(model, ["O=[N+]([O-])c1ccccc1", "bad("], tmp_path / "out", processor=processor, size=300)
    png, svg = tmp_path / "out" / "mol0_nitro.png", tmp_path / "out" / "mol0_nitro.svg"
    assert explanations[0].files == [str(png), str(svg)]
    assert _png_size(png) == (300, 300) and 5_000 < png.stat().st_size < 500_000
    assert svg.read_text().lstrip().startswith(("<?xml", "<svg")) and 2_000 < svg.stat().st_size < 2_000_000
    with open(tmp_path / "out" / "attributions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["element"] for r in rows] == [a.GetSymbol() for a in Chem.MolFromSmiles("O=[N+]([O-])c1ccccc1").GetAtoms()]
    np.testing.assert_allclose([float(r["nitro"]) for r in rows], explanations[0].attributions["nitro"], rtol=1e-6)
    payload = json.loads((tmp_path / "out" / "explanations.json").read_text())
    assert payload["method"] == "occlusion_of_atom_input_embeddings" and payload["molecules"][1]["valid"] is False


def test_cli_explain(nitro_model, tmp_path, capsys):
    _, _, folder = nitro_model
    out = tmp_path / "cli"
    assert main(["explain", "--model", str(folder), "--smiles", "CCc1ccc([N+](=O)[O-])cc1", "CCO",
                 "--output", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["molecules"] == 2 and summary["valid"] == 2 and summary["tasks"] == ["nitro"]
    for name in ("mol0_nitro.png", "mol0_nitro.svg", "mol1_nitro.png", "attributions.csv", "explanations.json"):
        assert (out / name).is_file(), name
    assert main(["explain", "--model", str(folder), "--smiles", "CCO", "--tasks", "logp",
                 "--output", str(out)]) == 2
    assert "logp" in capsys.readouterr().err
