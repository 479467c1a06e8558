"""The processor output follows docs/batch-format.md exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rdkit import Chem


CONTRACT_KEYS = {
    "atom_features": (torch.long, 2),
    "bond_features": (torch.long, 2),
    "edge_index": (torch.long, 2),
    "batch": (torch.long, 1),
    "ptr": (torch.long, 1),
    "atomic_numbers": (torch.long, 1),
    "pos": (torch.float32, 2),
    "conformer_status": (torch.long, 1),
    "pixel_values": (torch.float32, 4),
    "valid_mask": (torch.bool, 1),
    "input_indices": (torch.long, 1),
}


def test_vocabularies_are_the_featurizer_maps_plus_an_unknown_index():
    """Each vocabulary is what the featurizer can write: its value map plus one last "unknown" index, which an
    exotic atom or bond really receives."""
    from rdkit import Chem

    from mmsa_hf.processing import ATOM_FEATURE_VOCAB_SIZES, BOND_FEATURE_VOCAB_SIZES, CONFORMER_STATUSES
    from mmsa_hf.processing import feature_extraction_mmsa as fx

    assert ATOM_FEATURE_VOCAB_SIZES[1] == len(fx._CHIRALITY) + 1
    assert ATOM_FEATURE_VOCAB_SIZES[6] == len(fx._HYBRIDIZATION) + 1
    assert BOND_FEATURE_VOCAB_SIZES[:2] == [len(fx._BOND_TYPE) + 1, len(fx._BOND_STEREO) + 1]
    assert fx.UNKNOWN_ATOM_FEATURES == [size - 1 for size in ATOM_FEATURE_VOCAB_SIZES]
    dummy_and_charged = Chem.MolFromSmiles("[*][Fe+7]")
    rows, numbers = fx.atom_features(dummy_and_charged)
    assert numbers.tolist() == [0, 26]
    assert rows[0, 0] == ATOM_FEATURE_VOCAB_SIZES[0] - 1  # atomic number 0: unknown element
    assert rows[1, 3] == ATOM_FEATURE_VOCAB_SIZES[3] - 1  # charge +7 is beyond the charge vocabulary
    assert CONFORMER_STATUSES[fx.STATUS_INVALID] == "invalid" and len(set(CONFORMER_STATUSES)) == len(CONFORMER_STATUSES)


def test_keys_dtypes_shapes(bbbp_small, bbbp_small_batch):
    from mmsa_hf.processing import ATOM_FEATURE_VOCAB_SIZES, BOND_FEATURE_VOCAB_SIZES

    out = bbbp_small_batch
    assert set(out.keys()) == set(CONTRACT_KEYS) | {"smiles"}
    for key, (dtype, ndim) in CONTRACT_KEYS.items():
        assert isinstance(out[key], torch.Tensor), key
        assert out[key].dtype == dtype and out[key].ndim == ndim, (key, out[key].dtype, out[key].shape)
    B, N, E = len(bbbp_small), out["atom_features"].shape[0], out["edge_index"].shape[1]
    assert out["atom_features"].shape == (N, 9)
    assert out["bond_features"].shape == (E, 3)
    assert out["edge_index"].shape == (2, E)
    assert out["batch"].shape == out["atomic_numbers"].shape == (N,)
    assert out["pos"].shape == (N, 3)
    assert out["ptr"].shape == (B + 1,)
    assert out["pixel_values"].shape == (B, 3, 224, 224)
    for key in ("conformer_status", "valid_mask", "input_indices"):
        assert out[key].shape == (B,)
    assert out["valid_mask"].all()
    assert out["input_indices"].tolist() == list(range(B))
    assert out["smiles"] == [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in bbbp_small]
    # every categorical value indexes its vocabulary
    assert (out["atom_features"] >= 0).all() and (out["bond_features"] >= 0).all()
    assert (out["atom_features"] < torch.tensor(ATOM_FEATURE_VOCAB_SIZES)).all()
    assert (out["bond_features"] < torch.tensor(BOND_FEATURE_VOCAB_SIZES)).all()


def test_batch_ptr_and_edges(bbbp_small, bbbp_small_batch):
    out = bbbp_small_batch
    ptr, batch, edge_index = out["ptr"], out["batch"], out["edge_index"]
    counts = [Chem.MolFromSmiles(s).GetNumAtoms() for s in bbbp_small]
    assert torch.equal(ptr, torch.tensor(np.concatenate([[0], np.cumsum(counts)])))
    assert torch.equal(batch, torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts)))
    # global indices, within each molecule, each bond in both directions with the same features
    assert torch.equal(batch[edge_index[0]], batch[edge_index[1]])
    pairs = {(int(i), int(j)): tuple(f.tolist()) for (i, j), f in zip(edge_index.T, out["bond_features"])}
    assert all(pairs[(j, i)] == feat for (i, j), feat in pairs.items())
    n_bonds = sum(Chem.MolFromSmiles(s).GetNumBonds() for s in bbbp_small)
    assert edge_index.shape[1] == 2 * n_bonds == len(pairs)
    # atomic numbers agree with the first feature column
    z = out["atomic_numbers"]
    assert torch.equal(out["atom_features"][:, 0], torch.where((z >= 1) & (z <= 118), z - 1, torch.tensor(118)))


def test_call_is_collate_of_featurize(processor, bbbp_small, bbbp_small_batch):
    records = processor.featurize(bbbp_small)
    assert [r["input_index"] for r in records] == list(range(len(bbbp_small)))
    record = records[0]
    assert set(record) == {
        "atom_features", "bond_features", "edge_index", "atomic_numbers", "pos", "conformer_status",
        "image_png", "smiles", "valid", "input_index",
    }  # fmt: skip
    assert isinstance(record["image_png"], bytes) and record["image_png"].startswith(b"\x89PNG")
    assert record["pos"].dtype == np.float32 and record["edge_index"].shape[0] == 2
    collated = processor.collate(records)
    assert collated.keys() == bbbp_small_batch.keys()
    for key, value in bbbp_small_batch.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(collated[key], value), key
        else:
            assert collated[key] == value


def test_collate_accepts_arrow_style_records(processor, bbbp_small):
    """Records as `datasets` gives them back (nested lists, empty edge lists as [[], []]) collate the same."""
    records = processor.featurize([bbbp_small[2], "[Na+]", bbbp_small[5]])
    as_lists = [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()} for r in records]
    assert as_lists[1]["edge_index"] == [[], []] and as_lists[1]["bond_features"] == []
    expected, got = processor.collate(records), processor.collate(as_lists)
    for key, value in expected.items():
        assert torch.equal(got[key], value) if isinstance(value, torch.Tensor) else got[key] == value


def test_single_input_forms(processor):
    one = processor("c1ccccc1O")
    listed = processor(["c1ccccc1O"])
    from_mol = processor(Chem.MolFromSmiles("c1ccccc1O"))
    for key, value in one.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, listed[key]) and torch.equal(value, from_mol[key]), key
    mixed = processor(["CCO", Chem.MolFromSmiles("c1ccccc1O")])
    assert mixed["smiles"] == ["CCO", "Oc1ccccc1"]
    assert torch.equal(mixed["atom_features"][3:], one["atom_features"])


def test_numpy_return_and_model_input_names(processor):
    out = processor(["CCO", "CN"], return_tensors="np")
    assert isinstance(out["pos"], np.ndarray) and out["pos"].dtype == np.float32
    assert set(processor.model_input_names) == set(CONTRACT_KEYS)


def test_feature_values(processor):
    """Spot checks of the OGB columns: charge, Hs, aromaticity, ring, hybridization, unknown element."""
    out = processor(["CC(=O)[O-]", "c1ccccc1", "[NH4+]", "[Fe]", "*C"], return_tensors="np")
    af, ptr = out["atom_features"], out["ptr"]
    acetate = af[ptr[0] : ptr[1]]
    assert acetate[3].tolist() == [7, 0, 1, 4, 0, 0, 1, 0, 0]  # O-: Z=8, degree 1, charge -1, sp2
    benzene = af[ptr[1] : ptr[2]]
    assert (benzene[:, 7] == 1).all() and (benzene[:, 8] == 1).all() and (benzene[:, 6] == 1).all()
    assert af[ptr[2]].tolist()[:5] == [6, 0, 4, 6, 4]  # N+ with 4 Hs
    assert af[ptr[3], 0] == 25  # Fe, Z = 26
    assert af[ptr[4], 0] == 118 and out["atomic_numbers"][ptr[4]] == 0  # dummy atom: unknown element
    assert out["bond_features"][2 * 2].tolist() == [0, 0, 1]  # acetate C-O-: single, conjugated


def test_progress_bar_for_long_inputs(capsys, monkeypatch):
    """More than 256 molecules show a tqdm bar unless `show_progress=False` (chemistry stubbed out for speed)."""
    from mmsa_hf.processing import MMSAProcessor

    molecules = ["C"] * 257
    for show in (True, False):
        processor = MMSAProcessor(show_progress=show)
        monkeypatch.setattr(processor, "featurize_one",
                            lambda molecule, index, views=None: processor.placeholder_record(index, views))
        assert len(processor.featurize(molecules)) == 257
        assert ("Featurizing molecules" in capsys.readouterr().err) is show
    quiet = MMSAProcessor(show_progress=True)
    monkeypatch.setattr(quiet, "featurize_one",
                        lambda molecule, index, views=None: quiet.placeholder_record(index, views))
    quiet.featurize(molecules[:256])
    quiet.featurize(molecules, show_progress=False)
    assert "Featurizing molecules" not in capsys.readouterr().err


def test_invalid_settings_rejected():
    from mmsa_hf.processing import MMSAFeatureExtractor, MMSAImageProcessor, MMSAProcessor

    with pytest.raises(ValueError, match="on_error"):
        MMSAProcessor(on_error="ignore")
    with pytest.raises(ValueError, match="fragments"):
        MMSAFeatureExtractor(fragments="smallest")
    with pytest.raises(ValueError, match="conformer_timeout"):
        MMSAFeatureExtractor(conformer_timeout=0)
    with pytest.raises(ValueError, match="image_mean"):
        MMSAImageProcessor(image_mean=[0.5, 0.5])
    with pytest.raises(ValueError, match="on_error"):
        MMSAProcessor().featurize(["C"], on_error="drop")


@pytest.mark.parametrize("fmt", [None, "numpy", "torch"])
def test_records_round_trip_through_datasets(processor, bbbp, fmt):
    """Records are Arrow-storable; rows read back from a `datasets.Dataset` collate to identical tensors."""
    datasets = pytest.importorskip("datasets")
    records = processor.featurize([bbbp[9], "[Na+]", "", bbbp[59]], on_error="mask")
    table = datasets.Dataset.from_list(records)
    assert table.features["image_png"] == datasets.Value("binary")
    table = table.with_format(fmt) if fmt else table
    expected, got = processor.collate(records), processor.collate([table[i] for i in range(len(table))])
    for key, value in expected.items():
        assert torch.equal(got[key], value) if isinstance(value, torch.Tensor) else got[key] == value, key


def test_conformer_status_codes_have_names(bbbp_small_batch):
    from mmsa_hf.processing import CONFORMER_STATUSES, conformer_status_names

    names = conformer_status_names(bbbp_small_batch["conformer_status"])
    assert len(names) == bbbp_small_batch["conformer_status"].numel()
    assert all(CONFORMER_STATUSES[code] == name
               for code, name in zip(bbbp_small_batch["conformer_status"].tolist(), names))
    assert conformer_status_names([0, 4]) == ["etkdg", "invalid"]
    with pytest.raises(ValueError, match="unknown code"):
        conformer_status_names([7])


@pytest.mark.parametrize("do_normalize", [True, False])
def test_pixel_values_are_contiguous_nchw_with_the_normalised_values(do_normalize):
    """`pixel_values` is a contiguous [B, 3, S, S] array (safetensors and other writers refuse strided tensors; the
    image encoder makes its own channels-last copy) holding the per-channel normalisation of the depiction."""
    from mmsa_hf.processing import MMSAImageProcessor

    processor = MMSAImageProcessor(image_size=32, do_normalize=do_normalize)
    images = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    got = torch.from_numpy(processor.normalize_images(images))
    expected = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    if do_normalize:
        mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
        expected = (expected - mean) / std
    assert got.shape == (2, 3, 32, 32) and got.dtype == torch.float32 and got.is_contiguous()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    batch = processor(["CCO", "c1ccccc1"])["pixel_values"]
    assert batch.shape == (2, 3, 32, 32) and batch.is_contiguous()
