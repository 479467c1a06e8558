"""Morgan-bit targets: RDKit's bits, the masked-row policy for unparsable SMILES, densification and the cached
column join."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator

from mmsa_hf.data.fingerprints import FINGERPRINT_COLUMN, add_fingerprints, compute_morgan_bits, fingerprint_targets


def test_bits_are_rdkits_morgan_bits_and_a_bad_smiles_is_none():
    bits = compute_morgan_bits(["c1ccccc1O", "not a smiles", "", "CC(=O)Nc1ccc(O)cc1"], radius=2, num_bits=1024)
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)
    for smiles, on_bits in (("c1ccccc1O", bits[0]), ("CC(=O)Nc1ccc(O)cc1", bits[3])):
        assert on_bits == list(generator.GetFingerprint(Chem.MolFromSmiles(smiles)).GetOnBits())
    assert bits[1] is None and bits[2] is None
    assert len(bits[3]) > len(bits[0])  # paracetamol has more environments than phenol


def test_radius_changes_the_bits():
    assert compute_morgan_bits(["CCOc1ccccc1"], radius=1)[0] != compute_morgan_bits(["CCOc1ccccc1"], radius=3)[0]
    with pytest.raises(ValueError, match="num_bits"):
        compute_morgan_bits(["CCO"], radius=2, num_bits=0)


def test_targets_are_dense_bits_and_a_missing_fingerprint_is_a_masked_row():
    rows = [{FINGERPRINT_COLUMN: [0, 5, 7]}, {FINGERPRINT_COLUMN: None}, {FINGERPRINT_COLUMN: []}]
    targets = fingerprint_targets(rows, num_bits=8)
    assert targets.dtype == torch.float32 and targets.shape == (3, 8)
    assert targets[0].tolist() == [1, 0, 0, 0, 0, 1, 0, 1]
    assert torch.isnan(targets[1]).all()
    assert targets[2].sum() == 0  # a molecule with no environment (not expected from RDKit) is all-off, not masked


def test_targets_reject_bits_of_another_width_and_rows_without_the_column():
    with pytest.raises(ValueError, match="another num_bits"):
        fingerprint_targets([{FINGERPRINT_COLUMN: [3, 2000]}], num_bits=1024)
    with pytest.raises(KeyError, match="morgan_bits"):
        fingerprint_targets([{"canonical_smiles": "CCO"}], num_bits=1024)


def test_add_fingerprints_joins_a_column_and_keeps_the_others():
    dataset = datasets.Dataset.from_dict({"canonical_smiles": ["CCO", "c1ccccc1", "bad"], "label": [1, 0, 1]})
    out = add_fingerprints(dataset, radius=2, num_bits=512)
    assert out.column_names == ["canonical_smiles", "label", FINGERPRINT_COLUMN]
    assert out["label"] == [1, 0, 1]
    assert out[FINGERPRINT_COLUMN][0] == compute_morgan_bits(["CCO"], 2, 512)[0]
    assert out[FINGERPRINT_COLUMN][2] is None
    assert np.isnan(fingerprint_targets(list(out), 512)[2]).all()
    with pytest.raises(ValueError, match="already has"):
        add_fingerprints(out)
    with pytest.raises(ValueError, match="no column 'smiles'"):
        add_fingerprints(dataset, smiles_column="smiles")
