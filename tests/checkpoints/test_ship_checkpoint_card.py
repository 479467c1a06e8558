"""The shipped checkpoint's model card names every pretraining term its config switches on."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mmsa_hf.modeling import MMSAConfig


def _ship_checkpoint_module():
    path = Path(__file__).resolve().parents[2] / "scripts" / "ship_checkpoint.py"
    spec = importlib.util.spec_from_file_location("ship_checkpoint", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_objective_summary_names_the_molecule_level_terms():
    summary = _ship_checkpoint_module().objective_summary
    config = MMSAConfig.from_preset("tiny", use_image=False, use_geometry=False, num_fingerprint_bits=64,
                                    assay_tasks=["hiv/HIV_active", "muv/MUV-466"], assay_weight=2.0)
    text = summary(config)
    assert "Views: graph." in text
    assert "64 folded Morgan bits" in text and "2 binary bioassay outcomes" in text and "weight 2)" in text
    plain = summary(MMSAConfig.from_preset("tiny"))
    assert "inter-view contrastive" in plain and "bioassay" not in plain and "Morgan" not in plain


def test_provenance_of_a_continued_run_names_the_start_and_the_idle_heads():
    provenance = _ship_checkpoint_module().provenance
    assert provenance({"init_from": None}) == []
    text = " ".join(provenance({"init_from": "checkpoints/mmsa-small-graph", "assay_targets": True}))
    assert "continued `checkpoints/mmsa-small-graph`" in text and "(descriptor, fingerprint, where present)" in text


def test_provenance_names_the_start_as_users_know_it_when_init_from_was_a_local_copy():
    provenance = _ship_checkpoint_module().provenance
    args = {"init_from": "/root/.cache/mmsa/runs/graph-assay-cont/final", "assay_targets": True}
    text = " ".join(provenance(args, started_from="checkpoints/mmsa-small-assay"))
    assert "continued `checkpoints/mmsa-small-assay` (from a local copy" in text and ".cache" not in text
    with pytest.raises(SystemExit, match="did not start from a checkpoint"):
        provenance({"init_from": None}, started_from="checkpoints/mmsa-small-assay")


def test_the_card_holds_every_benchmark_table_in_the_order_given(tmp_path):
    from mmsa_hf.modeling import MMSAForPreTraining
    from mmsa_hf.processing import MMSAProcessor

    tables = []
    for name, headline in (("classification", "test ROC-AUC × 100"), ("regression", "test RMSE")):
        tables.append(tmp_path / f"{name}.md")
        tables[-1].write_text(f"**Headline: {headline} at the best-validation epoch**\n\n| model | n |\n")
    model = MMSAForPreTraining(MMSAConfig.from_preset("tiny"))
    card = _ship_checkpoint_module().model_card(model, MMSAProcessor(), {"args": {}}, tables, "checkpoints/x")
    assert card.index("test ROC-AUC × 100") < card.index("test RMSE")
    assert card.count("## MoleculeNet benchmark") == 1
