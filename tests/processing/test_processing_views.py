"""Processor `views`: a graph-only path that computes no conformer and no depiction, equal graph tensors, saved
settings, unchanged full-processor fingerprints, and models that name a view their batch lacks."""

from __future__ import annotations

import json

import pytest
import torch
from rdkit.Chem import rdDepictor, rdDistGeom
from rdkit.Chem.Draw import rdMolDraw2D

from mmsa_hf.processing import MMSAFeatureExtractor, MMSAImageProcessor, MMSAProcessor


GRAPH_KEYS = {"atom_features", "bond_features", "edge_index", "batch", "ptr", "atomic_numbers"}
ROW_KEYS = {"valid_mask", "input_indices", "smiles"}
#: sha256 fingerprints of the full processors computed before `views` existed (datasets caches are keyed by them)
DEFAULT_FINGERPRINT = "f0daf55f92ad82ccf821d999d596e5694c0a7072c00f8f9d148a703bbcfeec85"
SMALL_PRESET_FINGERPRINT = "86d68c20ff55bd16cb629d8d8b1f36185cdc79a6a1c372cde62335e11370286a"  # image_size 128


def _raise(*args, **kwargs):
    raise AssertionError("a graph-only processor must not embed conformers or draw molecules")


@pytest.fixture()
def no_conformers_no_drawing(monkeypatch):
    """RDKit's conformer embedding, 2D layout and drawing all raise (patched at the RDKit module level)."""
    monkeypatch.setattr(rdDistGeom, "EmbedMolecule", _raise)
    monkeypatch.setattr(rdDepictor, "Compute2DCoords", _raise)
    monkeypatch.setattr(rdMolDraw2D, "MolDraw2DCairo", _raise)


@pytest.fixture(scope="module")
def graph_processor():
    return MMSAProcessor(MMSAFeatureExtractor(max_atoms=128), show_progress=False, views=("graph",))


def test_full_processor_fingerprints_are_unchanged():
    from mmsa_hf.data.featurize import FEATURIZE_FORMAT_VERSION, RECORD_COLUMNS, processor_fingerprint
    from mmsa_hf.training.common import build_processor

    assert processor_fingerprint(MMSAProcessor()) == DEFAULT_FINGERPRINT
    assert processor_fingerprint(build_processor(image_size=128)) == SMALL_PRESET_FINGERPRINT
    assert processor_fingerprint(MMSAProcessor(views=["geometry", "graph", "image"])) == DEFAULT_FINGERPRINT
    # format 2: conformer statuses 5 and 6 (force-field failure kept ETKDG coordinates), issue 14; views left it alone
    assert FEATURIZE_FORMAT_VERSION == 2
    assert RECORD_COLUMNS == ("atom_features", "bond_features", "edge_index", "atomic_numbers", "pos",
                              "conformer_status", "image_png", "canonical_smiles", "valid")
    assert "views" not in MMSAProcessor().to_dict()


def test_graph_only_fingerprint_differs():
    from mmsa_hf.data.featurize import processor_fingerprint

    graph_only = processor_fingerprint(MMSAProcessor(views=("graph",)))
    no_image = processor_fingerprint(MMSAProcessor(views=("graph", "geometry")))
    assert len({graph_only, no_image, DEFAULT_FINGERPRINT}) == 3


def test_graph_tensors_equal_the_full_processor_key_for_key(processor, graph_processor, bbbp_small):
    molecules = [*bbbp_small, "not a smiles", ""]
    full = processor(molecules, on_error="mask")
    graph = graph_processor(molecules, on_error="mask")
    assert set(graph.keys()) == GRAPH_KEYS | ROW_KEYS  # no pos / conformer_status / pixel_values, not zeros
    for key in GRAPH_KEYS | ROW_KEYS:
        if isinstance(full[key], torch.Tensor):
            assert graph[key].dtype == full[key].dtype and torch.equal(graph[key], full[key]), key
        else:
            assert graph[key] == full[key], key
    assert set(graph_processor.model_input_names) == GRAPH_KEYS | {"valid_mask", "input_indices"}


@pytest.mark.parametrize("num_proc", [1, 2])
def test_graph_only_embeds_no_conformer_and_draws_nothing(graph_processor, bbbp_small, no_conformers_no_drawing,
                                                          num_proc):
    records = graph_processor.featurize([*bbbp_small, "C1CC"], on_error="mask", num_proc=num_proc)
    assert [r["valid"] for r in records] == [True] * len(bbbp_small) + [False]
    for record in records:
        assert not {"pos", "conformer_status", "image_png"} & set(record)
    with pytest.raises(AssertionError, match="must not embed"):  # the patches are live: the full path trips them
        MMSAProcessor().featurize_one(bbbp_small[0])


def test_a_call_narrows_the_views(processor, graph_processor, bbbp_small, no_conformers_no_drawing):
    narrowed = processor(bbbp_small[:4], views=["graph"])
    direct = graph_processor(bbbp_small[:4])
    assert set(narrowed.keys()) == set(direct.keys())
    assert all(torch.equal(narrowed[k], direct[k]) for k in GRAPH_KEYS)
    with pytest.raises(ValueError, match=r"computes only \['graph'\], not \['image'\]"):
        graph_processor.featurize(["CCO"], views=("graph", "image"))


def test_views_are_checked():
    with pytest.raises(ValueError, match=r"unknown view\(s\) \['3d'\]"):
        MMSAProcessor(views=("graph", "3d"))
    with pytest.raises(ValueError, match="must include 'graph'"):
        MMSAProcessor(views=("image",))


def test_views_are_saved_and_widened(tmp_path, graph_processor):
    from transformers import AutoProcessor

    import mmsa_hf  # noqa: F401 - registers the Auto classes

    graph_processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["views"] == ["graph"]
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert reloaded.views == ("graph",) and reloaded.feature_extractor.max_atoms == 128
    wider = reloaded.with_views(None)
    assert wider.views == ("graph", "image", "geometry") and wider.feature_extractor.max_atoms == 128
    assert "pixel_values" in wider(["CCO"]) and "views" not in wider.to_dict()


def test_collate_names_a_view_the_records_lack(processor, graph_processor):
    records = graph_processor.featurize(["CCO", "CN"])
    with pytest.raises(ValueError, match=r"record 0 has no 'image_png', so the 'image' view"):
        processor.collate(records)
    full_records = processor.featurize(["CCO", "CN"])
    assert set(graph_processor.collate(full_records).keys()) == GRAPH_KEYS | ROW_KEYS  # no PNG decoding


def test_views_for_config():
    from mmsa_hf import MMSAConfig
    from mmsa_hf.training.common import build_processor, views_for_config

    config = MMSAConfig.from_preset("tiny")
    assert views_for_config(config) == ("graph", "image", "geometry")
    assert views_for_config(MMSAConfig.from_preset("tiny", downstream_modalities=["graph"])) == ("graph",)
    assert views_for_config(MMSAConfig.from_preset("tiny", downstream_modalities=["geometry", "graph"])) == (
        "graph", "geometry")
    graph_property = MMSAConfig.from_preset("tiny", downstream_modalities=["graph"])
    assert views_for_config(graph_property, model="backbone") == ("graph", "image", "geometry")
    assert views_for_config(MMSAConfig.from_preset("tiny", use_image=False), model="backbone") == (
        "graph", "geometry")
    assert build_processor(image_size=64, views=views_for_config(graph_property)).views == ("graph",)
    with pytest.raises(ValueError, match="model='pretraining'"):
        views_for_config(config, model="pretraining")


@pytest.mark.parametrize(
    ("overrides", "view", "missing"),
    [({}, "image", "pixel_values"), ({"use_image": False}, "geometry", "pos")],
)
def test_a_model_that_reads_a_view_names_it(graph_processor, overrides, view, missing):
    from mmsa_hf import MMSAConfig, MMSAForPreTraining, MMSAModel

    config = MMSAConfig.from_preset("tiny", **overrides)
    batch = dict(graph_processor(["CCO", "c1ccccc1O"]))
    for model in (MMSAModel(config).eval(), MMSAForPreTraining(config).eval()):
        with pytest.raises(ValueError, match=rf"reads the '{view}' view but the batch has no {missing}"):
            model(**batch)


def test_graph_only_property_model_reads_a_graph_only_batch(processor, graph_processor, bbbp_small):
    from mmsa_hf import MMSAConfig, MMSAForMolecularPropertyPrediction

    torch.manual_seed(0)
    model = MMSAForMolecularPropertyPrediction(
        MMSAConfig.from_preset("tiny", num_labels=2, downstream_modalities=["graph"])
    ).eval()
    with torch.no_grad():
        full = model(**processor(bbbp_small[:5])).predictions
        graph = model(**graph_processor(bbbp_small[:5])).predictions
    assert torch.equal(full, graph)
    with pytest.raises(ValueError, match="'image' view"):
        MMSAForMolecularPropertyPrediction(MMSAConfig.from_preset("tiny", num_labels=1))(
            **graph_processor(["CCO"]))
