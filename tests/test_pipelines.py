"""transformers pipelines for MMSA: output = a direct model call, batching, on_error, views, labels, remote code."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from transformers import pipeline

import mmsa_hf  # noqa: F401  (registers the pipelines)
from mmsa_hf import MMSAConfig, MMSAForMolecularPropertyPrediction, MMSAModel, load_model, load_processor
from mmsa_hf.hub import save_for_hub
from mmsa_hf.pipelines import model_views
from mmsa_hf.processing import MMSAImageProcessor, MMSAProcessor
from mmsa_hf.training.common import views_for_config

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Oc1ccccc1C(=O)O", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "c1ccncc1",
          "O=[N+]([O-])c1ccccc1", "CCN(CC)CC", "ClC(Cl)Cl", "OC1CCCCC1"]
BAD = "not a smiles"


def _processor(on_error="raise"):
    return MMSAProcessor(image_processor=MMSAImageProcessor(image_size=64), on_error=on_error)


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("backbone")
    MMSAModel(MMSAConfig.from_preset("tiny")).save_pretrained(folder)
    _processor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def property_dir(tmp_path_factory):
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("property")
    config = MMSAConfig.from_preset("tiny", num_labels=2, downstream_modalities=["graph"],
                                    id2label={0: "p_np", 1: "toxic"}, label2id={"p_np": 0, "toxic": 1})
    MMSAForMolecularPropertyPrediction(config).save_pretrained(folder)
    _processor(on_error="mask").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def extractor(backbone_dir):
    return pipeline("molecular-feature-extraction", model=str(backbone_dir), device="cpu")


@pytest.fixture(scope="module")
def predictor(property_dir):
    return pipeline("molecular-property-prediction", model=str(property_dir), device="cpu")


def test_feature_extraction_equals_direct_model_call(extractor, backbone_dir):
    model = load_model(backbone_dir).eval()
    processor = load_processor(backbone_dir)
    with torch.no_grad():
        direct = model(**processor(SMILES[:4]))
    rows = extractor(SMILES[:4], batch_size=4, per_view=True, return_tensors=True)
    assert [r["smiles"] for r in rows] == SMILES[:4] and all(r["valid"] for r in rows)
    torch.testing.assert_close(torch.stack([r["embedding"] for r in rows]), direct.unified_embedding)
    for view in ("graph", "image", "geometry"):
        got = torch.stack([r[f"{view}_embedding"] for r in rows])
        torch.testing.assert_close(got, getattr(direct, f"{view}_embedding"))
    single = extractor(SMILES[0])
    assert isinstance(single["embedding"], list) and len(single["embedding"]) == model.config.hidden_size
    torch.testing.assert_close(torch.tensor(single["embedding"]), direct.unified_embedding[0])


def test_batch_sizes_1_and_7_agree_with_a_masked_row(extractor):
    inputs = SMILES[:4] + [BAD] + SMILES[4:]
    one = extractor(inputs, batch_size=1, on_error="mask", return_tensors=True)
    seven = extractor(inputs, batch_size=7, on_error="mask", return_tensors=True)
    assert len(one) == len(seven) == len(inputs)
    for a, b in zip(one, seven):
        assert a["smiles"] == b["smiles"] and a["valid"] == b["valid"]
        torch.testing.assert_close(a["embedding"], b["embedding"], equal_nan=True, atol=1e-5, rtol=1e-5)
    bad = seven[4]
    assert bad["smiles"] == BAD and bad["valid"] is False and "unparsable" in bad["error"]
    assert bad["canonical_smiles"] is None and torch.isnan(bad["embedding"]).all()


def test_on_error_raise_and_skip(extractor):
    with pytest.raises(ValueError, match="invalid molecule 'not a smiles'"):
        extractor(["CCO", BAD], on_error="raise")
    kept = extractor(["CCO", BAD, "c1ccncc1"], on_error="skip", batch_size=2)
    assert [r["smiles"] for r in kept] == ["CCO", "c1ccncc1"]
    with pytest.raises(ValueError, match="skip"):
        extractor(BAD, on_error="skip")
    with pytest.raises(ValueError, match="on_error"):
        extractor("CCO", on_error="ignore")


def test_property_pipeline_labels_and_values(predictor, property_dir):
    model = load_model(property_dir, model_class=MMSAForMolecularPropertyPrediction).eval()
    processor = load_processor(property_dir).with_views(("graph",))
    with torch.no_grad():
        direct = model(**processor(SMILES)).predictions
    rows = predictor(SMILES + [BAD], batch_size=3)  # the processor's on_error ("mask") applies
    assert all(list(r["predictions"]) == ["p_np", "toxic"] for r in rows)
    got = torch.tensor([list(r["predictions"].values()) for r in rows[:-1]], dtype=torch.float64)
    torch.testing.assert_close(got, direct.double(), atol=1e-6, rtol=1e-6)
    assert rows[-1]["valid"] is False and all(math.isnan(v) for v in rows[-1]["predictions"].values())
    assert predictor.device.type == "cpu" and next(predictor.model.parameters()).device.type == "cpu"


def test_graph_only_model_featurizes_graphs_only(predictor, monkeypatch):
    assert predictor.views == ("graph",) and predictor.processor.views == ("graph",)

    def no_conformer(*args, **kwargs):
        raise AssertionError("a graph-only model must not embed conformers")

    monkeypatch.setattr(predictor.processor.feature_extractor, "conformer", no_conformer)
    monkeypatch.setattr(predictor.processor.image_processor, "depict", no_conformer)
    assert predictor("CCO")["valid"] is True


@pytest.mark.parametrize("overrides,kind", [
    ({}, "backbone"), ({"use_image": False}, "backbone"), ({"use_geometry": False, "use_image": False}, "backbone"),
    ({"num_labels": 1, "downstream_modalities": ["graph"]}, "property"),
    ({"num_labels": 1, "downstream_modalities": ["graph", "geometry"]}, "property"),
    ({"num_labels": 1}, "property"),
])
def test_model_views_matches_views_for_config(overrides, kind):
    config = MMSAConfig.from_preset("tiny", **overrides)
    model = MMSAForMolecularPropertyPrediction(config) if kind == "property" else MMSAModel(config)
    assert model_views(model) == views_for_config(config, model=kind)


def test_dataset_column_and_keydataset(extractor):
    import datasets
    from transformers.pipelines.pt_utils import KeyDataset

    ds = datasets.Dataset.from_dict({"smiles": SMILES[:3], "y": [0, 1, 0]})
    from_column = extractor(ds["smiles"], batch_size=2, return_tensors=True)
    streamed = list(extractor(KeyDataset(ds, "smiles"), batch_size=2, return_tensors=True))
    assert [r["smiles"] for r in from_column] == [r["smiles"] for r in streamed] == SMILES[:3]
    for a, b in zip(from_column, streamed):
        torch.testing.assert_close(a["embedding"], b["embedding"])
    with pytest.raises(ValueError, match="SMILES column"):
        extractor(ds)


def test_property_pipeline_rejects_a_backbone(backbone_dir):
    with pytest.raises(ValueError, match="MMSAForMolecularPropertyPrediction"):
        pipeline("molecular-property-prediction", model=MMSAModel.from_pretrained(backbone_dir),
                 processor=load_processor(backbone_dir), device="cpu")


CHILD = r'''
import importlib.abc, json, sys

class BlockMMSA(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "mmsa_hf" or name.startswith("mmsa_hf."):
            raise ImportError("mmsa_hf is blocked in this test")

sys.meta_path.insert(0, BlockMMSA())
from transformers import pipeline

root = sys.argv[1]
predictor = pipeline("molecular-property-prediction", model=root, trust_remote_code=True, device="cpu")
assert type(predictor).__module__.startswith("transformers_modules"), type(predictor).__module__
rows = predictor(json.loads(sys.argv[2]), batch_size=2, on_error="mask")
extractor = pipeline("molecular-feature-extraction", model=root, trust_remote_code=True, device="cpu")
embedding = extractor("CCO")["embedding"]
assert "mmsa_hf" not in sys.modules
print("RESULT " + json.dumps({"rows": rows, "embedding": embedding}))
'''


def test_remote_code_pipelines_without_mmsa_hf(property_dir, predictor, extractor, tmp_path):
    model = load_model(property_dir, model_class=MMSAForMolecularPropertyPrediction)
    save_for_hub(model, load_processor(property_dir), tmp_path / "repo")
    assert (tmp_path / "repo" / "pipeline_mmsa.py").is_file()
    inputs = ["CCO", BAD, "c1ccncc1"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TRANSFORMERS_VERBOSITY="error")
    (tmp_path / "cwd").mkdir()
    import json

    result = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "repo"), json.dumps(inputs)],
                            cwd=tmp_path / "cwd", env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("RESULT "))
    remote = json.loads(line[len("RESULT "):])
    local = predictor(inputs, on_error="mask")
    assert [r["valid"] for r in remote["rows"]] == [True, False, True]
    for r, l in zip(remote["rows"], local):
        if r["valid"]:
            assert r["predictions"] == pytest.approx(l["predictions"], abs=1e-6)
    backbone = pipeline("molecular-feature-extraction", model=model.mmsa.eval(), processor=load_processor(property_dir),
                        device="cpu")
    assert remote["embedding"] == pytest.approx(backbone("CCO")["embedding"], abs=1e-5)
