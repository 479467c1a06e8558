"""``model(**processor(smiles))`` with the real processor (RDKit featurization, conformers, depictions)."""

from __future__ import annotations

import pytest
import torch

from mmsa_hf.modeling import MMSAForMolecularPropertyPrediction, MMSAForPreTraining, MMSAModel
from mmsa_hf.modeling.testing_utils import assert_invariant

from mmsa_modeling_testutils import tiny_config

processing = pytest.importorskip("mmsa_hf.processing")

SMILES = ["CCO", "c1ccccc1O", "not_a_smiles", "CC(=O)Nc1ccc(O)cc1", "C", "OC(=O)C1CC1"]


@pytest.fixture(scope="module")
def processor():
    return processing.MMSAProcessor(on_error="mask", show_progress=False)


@pytest.fixture(scope="module")
def inputs(processor):
    return processor(SMILES)


def test_pretraining_on_processor_output(inputs):
    assert inputs["valid_mask"].tolist() == [True, True, False, True, True, True]
    model = MMSAForPreTraining(tiny_config()).train()
    out = model(**inputs)
    assert torch.isfinite(out.loss) and out.loss > 0
    out.loss.backward()
    assert torch.all(out.unified_embedding[2] == 0)
    assert out.modality_mask[[0, 1, 3, 4, 5]].all()


def test_embeddings_align_with_atoms_and_are_batch_independent(processor, inputs):
    model = MMSAModel(tiny_config()).eval()
    with torch.no_grad():
        out = model(**inputs)
        alone = model(**processor(["CC(=O)Nc1ccc(O)cc1"]))
    ptr = inputs["ptr"]
    assert out.atom_embeddings.shape[0] == int(ptr[-1])
    torch.testing.assert_close(out.unified_embedding[3], alone.unified_embedding[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.atom_embeddings[ptr[3] : ptr[4]], alone.atom_embeddings, atol=1e-5, rtol=0)


def test_invariance_on_real_conformers(inputs):
    assert_invariant(MMSAModel(tiny_config()), dict(inputs), atol=1e-4)


def test_property_prediction_on_processor_output(inputs):
    model = MMSAForMolecularPropertyPrediction(tiny_config(num_labels=2)).train()
    labels = torch.tensor([[1.0, 0.0], [0.0, float("nan")], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    out = model(**inputs, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert torch.isnan(out.predictions[2]).all()
