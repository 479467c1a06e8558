"""Invalid inputs under each `on_error` policy, and the valid-but-unusual molecules (ions, salts, H, isotopes, stereo)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem.MolStandardize import rdMolStandardize


def _bad_cases(tox21, hiv):
    return {
        "empty_string": ("", "empty SMILES"),
        "none": (None, "missing molecule"),
        "unparsable": ("C1CC(N", "unparsable SMILES"),
        "valence_tox21_row_1322": (tox21[1322], "Explicit valence"),  # [AlH3] aluminium compound
        "valence_hiv_row_987": (hiv[987], "sanitization failed"),  # [B-2] boron complex
        "over_max_atoms_hiv_row_35616": (hiv[35616], "exceeds max_atoms=128"),  # 222 heavy atoms
        "not_a_molecule": (3.5, "expected a SMILES string or an rdkit Mol"),
    }


CASES = [
    "empty_string",
    "none",
    "unparsable",
    "valence_tox21_row_1322",
    "valence_hiv_row_987",
    "over_max_atoms_hiv_row_35616",
    "not_a_molecule",
]


@pytest.fixture(scope="module")
def good(bbbp):
    return [bbbp[9], bbbp[12]]


@pytest.fixture(scope="module")
def good_batch(processor, good):
    return processor(good)


@pytest.mark.parametrize("case", CASES)
def test_raise(processor, tox21, hiv, good, case):
    bad, reason = _bad_cases(tox21, hiv)[case]
    with pytest.raises(ValueError) as info:
        processor([good[0], bad, good[1]])  # default policy: raise
    message = str(info.value)
    assert "index 1" in message and reason in message
    assert repr(bad) in message  # names the offending SMILES (or object)
    with pytest.raises(ValueError, match=re.escape(reason)):
        processor([good[0], bad], on_error="raise")


@pytest.mark.parametrize("case", CASES)
def test_skip(processor, tox21, hiv, good, good_batch, case):
    bad, _ = _bad_cases(tox21, hiv)[case]
    out = processor([good[0], bad, good[1]], on_error="skip")
    assert out["input_indices"].tolist() == [0, 2]
    assert out["valid_mask"].tolist() == [True, True]
    assert out["smiles"] == good_batch["smiles"]
    for key, value in good_batch.items():
        if isinstance(value, torch.Tensor) and key != "input_indices":
            assert torch.equal(out[key], value), key
    assert processor.featurize([bad], on_error="skip") == []


@pytest.mark.parametrize("case", CASES)
def test_mask(processor, tox21, hiv, good, good_batch, case):
    bad, _ = _bad_cases(tox21, hiv)[case]
    out = processor([good[0], bad, good[1]], on_error="mask")
    assert out["input_indices"].tolist() == [0, 1, 2]
    assert out["valid_mask"].tolist() == [True, False, True]
    assert out["smiles"] == [good_batch["smiles"][0], "", good_batch["smiles"][1]]
    _assert_placeholder(out, 1)
    # the valid rows are unchanged by the placeholder between them
    keep = torch.ones(out["atom_features"].shape[0], dtype=torch.bool)
    keep[out["ptr"][1] : out["ptr"][2]] = False
    assert torch.equal(out["atom_features"][keep], good_batch["atom_features"])
    assert torch.equal(out["pos"][keep], good_batch["pos"])
    assert torch.equal(out["pixel_values"][[0, 2]], good_batch["pixel_values"])


def _assert_placeholder(out, b: int) -> None:
    """docs/batch-format.md: one all-unknown atom, Z = 0, at the origin, no bonds, white image, status invalid."""
    from mmsa_hf.processing import ATOM_FEATURE_VOCAB_SIZES, CONFORMER_STATUSES

    start, end = int(out["ptr"][b]), int(out["ptr"][b + 1])
    assert end - start == 1
    assert out["atom_features"][start].tolist() == [size - 1 for size in ATOM_FEATURE_VOCAB_SIZES]
    assert out["atomic_numbers"][start] == 0
    assert out["pos"][start].tolist() == [0.0, 0.0, 0.0]
    assert not ((out["edge_index"] == start).any())
    assert out["conformer_status"][b] == CONFORMER_STATUSES.index("invalid")
    assert out["valid_mask"][b].item() is False
    assert out["smiles"][b] == ""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    white = ((1.0 - mean) / std).expand(3, 224, 224)
    assert torch.allclose(out["pixel_values"][b], white, atol=1e-6)


def test_policy_is_a_saved_setting_overridable_per_call(good):
    from mmsa_hf.processing import MMSAProcessor

    masking = MMSAProcessor(on_error="mask", show_progress=False)
    assert masking(["", good[0]])["valid_mask"].tolist() == [False, True]
    with pytest.raises(ValueError, match="index 0"):
        masking(["", good[0]], on_error="raise")


def test_all_invalid_under_skip_is_an_error(processor, tox21):
    with pytest.raises(ValueError, match="no valid molecules"):
        processor(["", None, tox21[1322]], on_error="skip")
    with pytest.raises(ValueError, match="no valid molecules"):
        processor([], on_error="skip")
    masked = processor(["", None], on_error="mask")
    assert masked["valid_mask"].tolist() == [False, False]


def test_every_rejected_tox21_row(processor, tox21):
    rows = [1322, 2290, 2297, 3558, 4565, 4649, 5538, 6723]
    out = processor([tox21[i] for i in rows] + ["CCO"], on_error="skip")
    assert out["input_indices"].tolist() == [8]


def test_max_atoms_is_a_setting_and_never_truncates(bbbp):
    from mmsa_hf.processing import MMSAFeatureExtractor, MMSAProcessor

    n_atoms = Chem.MolFromSmiles(bbbp[4]).GetNumAtoms()
    small = MMSAProcessor(MMSAFeatureExtractor(max_atoms=n_atoms - 1), show_progress=False)
    with pytest.raises(ValueError, match=f"{n_atoms} atoms exceeds max_atoms={n_atoms - 1}"):
        small([bbbp[4]])
    exact = MMSAProcessor(MMSAFeatureExtractor(max_atoms=n_atoms), show_progress=False)
    assert exact([bbbp[4]])["atom_features"].shape[0] == n_atoms


# --------------------------------------------------------------------------- valid but unusual molecules
def test_single_atoms_and_ions_have_no_edges(processor):
    for smiles in ("[Na+]", "C", "[Cl-]", "[Cl]"):
        out = processor(smiles)
        assert out["edge_index"].shape == (2, 0) and out["bond_features"].shape == (0, 3)
        assert out["atom_features"].shape == (1, 9) and out["pos"].shape == (1, 3)
        assert torch.isfinite(out["pos"]).all()


def test_salts_all_and_largest_fragment(processor, bbbp):
    from mmsa_hf.processing import MMSAFeatureExtractor, MMSAProcessor

    salts = [bbbp[59], bbbp[29], "[Na+].[Cl-]"]  # real HCl salt with [H+], real hydrate, plain salt
    everything = processor(salts)
    assert everything["smiles"][0].count(".") == 2
    # fragments embedded separately are laid apart: no two atoms overlap
    for b in range(len(salts)):
        p = everything["pos"][everything["ptr"][b] : everything["ptr"][b + 1]]
        assert (torch.cdist(p, p) + torch.eye(len(p)) * 10).min() > 0.5
    largest = MMSAProcessor(MMSAFeatureExtractor(fragments="largest"), show_progress=False)(salts)
    chooser = rdMolStandardize.LargestFragmentChooser()
    expected = [Chem.MolToSmiles(chooser.choose(Chem.MolFromSmiles(s))) for s in salts]
    assert largest["smiles"] == expected
    assert "." not in largest["smiles"][0] and "." not in largest["smiles"][1]
    assert largest["atom_features"].shape[0] < everything["atom_features"].shape[0]


def test_explicit_hydrogens(processor, bbbp):
    written_with_h = bbbp[38]  # "IC1=C(N([H])[H])C=CC(...)=C(O[H])..." (real BBBP row)
    assert "[H]" in written_with_h
    implicit = Chem.MolToSmiles(Chem.MolFromSmiles(written_with_h))
    a, b = processor(written_with_h), processor(Chem.MolFromSmiles(written_with_h))
    assert a["smiles"] == [implicit]
    assert torch.equal(a["atom_features"], b["atom_features"])
    # an RDKit Mol with explicit H atoms (AddHs, no conformer) featurizes as the H-suppressed molecule
    with_h_atoms = Chem.AddHs(Chem.MolFromSmiles(written_with_h))
    c = processor(with_h_atoms)
    for key in ("atom_features", "bond_features", "edge_index", "atomic_numbers", "pos", "pixel_values"):
        assert torch.equal(a[key], c[key]), key
    assert (a["atomic_numbers"] > 1).all()


def test_isotopes(processor):
    plain, labelled = processor(["CO", "[13CH3]O"]), processor("[13CH3]O")
    assert labelled["smiles"] == ["[13CH3]O"]
    assert torch.equal(plain["atom_features"][:2], labelled["atom_features"])  # no isotope column
    deuterated = processor("[2H]OC")  # RDKit (and OGB) keep isotopic H as an atom, Z = 1
    assert deuterated["atomic_numbers"].tolist() == [1, 8, 6]
    assert deuterated["smiles"] == ["[2H]OC"]


def test_stereo_is_reflected_in_features(processor, bbbp):
    chiral = bbbp[21]  # C[C@H](N)Cc1ccccc1 (dextroamphetamine)
    mirror = chiral.replace("@", "@@")
    a, b = processor([chiral, mirror], return_tensors="np")["atom_features"].reshape(2, -1, 9)
    assert a[1, 1] != b[1, 1] and {a[1, 1], b[1, 1]} == {1, 2}  # CW vs CCW
    assert (np.delete(a, 1, axis=1) == np.delete(b, 1, axis=1)).all()
    e, z = processor(["F/C=C/F", "F/C=C\\F"], return_tensors="np")["bond_features"].reshape(2, -1, 3)
    assert e[2, 1] == 2 and z[2, 1] == 1  # STEREOE vs STEREOZ on the double bond
    both_ez = processor(bbbp[6])  # real BBBP row with C(=C(/O)...) double-bond stereo and many centres
    assert (both_ez["atom_features"][:, 1] > 0).any() and (both_ez["bond_features"][:, 1] > 0).any()
