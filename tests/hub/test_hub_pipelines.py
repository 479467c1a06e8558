"""A pushed checkpoint runs in transformers' pipeline() from the (test) Hub, as its model card says."""

from __future__ import annotations

import torch
from huggingface_hub import ModelCard
from transformers import pipeline

from mmsa_hf import MMSAConfig, MMSAForMolecularPropertyPrediction, push_to_hub
from mmsa_hf.hub import resolve_checkpoint_dir
from mmsa_hf.processing import MMSAImageProcessor, MMSAProcessor


def test_pushed_property_model_runs_in_a_pipeline_as_its_card_says(hub):
    torch.manual_seed(0)
    config = MMSAConfig.from_preset("tiny", num_labels=1, downstream_modalities=["graph"],
                                    id2label={0: "p_np"}, label2id={"p_np": 0})
    model = MMSAForMolecularPropertyPrediction(config).eval()
    processor = MMSAProcessor(image_processor=MMSAImageProcessor(image_size=64), on_error="mask")
    push_to_hub(model, processor, "test-user/mmsa-bbbp-pipe")

    card = ModelCard.load(resolve_checkpoint_dir("test-user/mmsa-bbbp-pipe") / "README.md")
    assert "pipeline_tag" not in card.data.to_dict()
    assert "molecular-property-prediction" in card.data.tags
    snippet = 'pipeline("molecular-property-prediction", model="test-user/mmsa-bbbp-pipe", trust_remote_code=True)'
    assert snippet in card.text

    pipe = pipeline("molecular-property-prediction", model="test-user/mmsa-bbbp-pipe", trust_remote_code=True,
                    device="cpu")
    rows = pipe(["CCO", "not a smiles"], batch_size=2)
    with torch.no_grad():
        direct = model(**processor.with_views(("graph",))(["CCO"])).predictions
    assert rows[0]["predictions"]["p_np"] == float(direct[0, 0]) and rows[1]["valid"] is False
