"""Every setting survives save_pretrained -> from_pretrained, through one nested processor_config.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch


NON_DEFAULT_FEATURE_EXTRACTOR = {
    "conformer_seed": 7,
    "conformer_timeout": 2.5,
    "conformer_force_field": "uff",
    "conformer_max_iters": 50,
    "use_provided_conformers": False,
    "max_atoms": 64,
    "fragments": "largest",
}
NON_DEFAULT_IMAGE_PROCESSOR = {
    "image_size": 96,
    "do_normalize": True,
    "image_mean": [0.5, 0.25, 0.125],
    "image_std": [0.2, 0.3, 0.4],
}
NON_DEFAULT_PROCESSOR = {"on_error": "mask", "num_proc": 2, "show_progress": False}


@pytest.fixture(scope="module")
def custom_processor():
    from mmsa_hf.processing import MMSAFeatureExtractor, MMSAImageProcessor, MMSAProcessor

    return MMSAProcessor(
        MMSAFeatureExtractor(**NON_DEFAULT_FEATURE_EXTRACTOR),
        MMSAImageProcessor(**NON_DEFAULT_IMAGE_PROCESSOR),
        **NON_DEFAULT_PROCESSOR,
    )


def _settings(processor) -> dict:
    data = processor.to_dict()
    return {
        "feature_extractor": {k: data["feature_extractor"][k] for k in NON_DEFAULT_FEATURE_EXTRACTOR},
        "image_processor": {k: data["image_processor"][k] for k in NON_DEFAULT_IMAGE_PROCESSOR},
        **{k: data[k] for k in NON_DEFAULT_PROCESSOR},
    }


EXPECTED = {
    "feature_extractor": NON_DEFAULT_FEATURE_EXTRACTOR,
    "image_processor": NON_DEFAULT_IMAGE_PROCESSOR,
    **NON_DEFAULT_PROCESSOR,
}


def test_save_writes_one_nested_processor_config(custom_processor, tmp_path):
    custom_processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["processor_class"] == "MMSAProcessor"
    assert config["feature_extractor"]["feature_extractor_type"] == "MMSAFeatureExtractor"
    assert config["image_processor"]["image_processor_type"] == "MMSAImageProcessor"
    for key, value in NON_DEFAULT_FEATURE_EXTRACTOR.items():
        assert config["feature_extractor"][key] == value, key
    for key, value in NON_DEFAULT_IMAGE_PROCESSOR.items():
        assert config["image_processor"][key] == value, key
    for key, value in NON_DEFAULT_PROCESSOR.items():
        assert config[key] == value, key


def test_round_trip_settings_and_outputs(custom_processor, tmp_path, bbbp):
    from mmsa_hf.processing import MMSAProcessor

    custom_processor.save_pretrained(tmp_path)
    loaded = MMSAProcessor.from_pretrained(tmp_path)
    assert _settings(loaded) == EXPECTED
    assert loaded.to_dict() == custom_processor.to_dict()
    molecules = [bbbp[59], "", bbbp[12]]  # a salt (fragments="largest"), an invalid row (on_error="mask")
    expected, got = custom_processor(molecules, num_proc=1), loaded(molecules, num_proc=1)
    assert got["pixel_values"].shape == (3, 3, 96, 96)
    assert got["valid_mask"].tolist() == [True, False, True]
    for key, value in expected.items():
        assert torch.equal(got[key], value) if isinstance(value, torch.Tensor) else got[key] == value, key


def test_default_round_trip(tmp_path):
    from mmsa_hf.processing import MMSAProcessor

    processor = MMSAProcessor()
    processor.save_pretrained(tmp_path)
    loaded = MMSAProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    assert loaded.on_error == "raise" and loaded.num_proc == 1
    assert loaded.feature_extractor.conformer_timeout == 10.0 and loaded.image_processor.image_size == 224


def test_from_pretrained_kwargs_override_processor_settings(custom_processor, tmp_path):
    from mmsa_hf.processing import MMSAProcessor

    custom_processor.save_pretrained(tmp_path)
    assert MMSAProcessor.from_pretrained(tmp_path, on_error="skip").on_error == "skip"


def test_a_sub_processor_passed_to_from_pretrained_replaces_the_saved_one(custom_processor, tmp_path):
    from mmsa_hf.processing import MMSAImageProcessor, MMSAProcessor

    custom_processor.save_pretrained(tmp_path)
    loaded = MMSAProcessor.from_pretrained(tmp_path, image_processor=MMSAImageProcessor(image_size=48))
    assert loaded.image_processor.image_size == 48
    assert loaded.feature_extractor.to_dict() == custom_processor.feature_extractor.to_dict()  # the saved one


def test_sub_processors_save_and_load_alone(custom_processor, tmp_path):
    from mmsa_hf.processing import MMSAFeatureExtractor, MMSAImageProcessor

    custom_processor.feature_extractor.save_pretrained(tmp_path / "fe")
    custom_processor.image_processor.save_pretrained(tmp_path / "ip")
    fe = MMSAFeatureExtractor.from_pretrained(tmp_path / "fe")
    ip = MMSAImageProcessor.from_pretrained(tmp_path / "ip")
    assert fe.to_dict() == custom_processor.feature_extractor.to_dict()
    assert ip.to_dict() == custom_processor.image_processor.to_dict()


def test_auto_processor(custom_processor, tmp_path):
    """AutoProcessor resolves the saved processor once `mmsa_hf` has registered its classes."""
    try:
        import mmsa_hf  # noqa: F401 - registers MMSAProcessor with AutoProcessor on import
    except ImportError as err:  # pragma: no cover
        pytest.skip(f"mmsa_hf (modeling + registration) is not importable yet: {err}")
    from transformers import AutoProcessor

    custom_processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "MMSAProcessor"
    assert _settings(loaded) == EXPECTED


def test_remote_code_round_trip(custom_processor, tmp_path, bbbp):
    """With `register_for_auto_class`, save_pretrained copies the flat processing files; a fresh process loads them
    with `AutoProcessor.from_pretrained(..., trust_remote_code=True)` without importing mmsa_hf."""
    from mmsa_hf.processing import MMSAFeatureExtractor, MMSAImageProcessor, MMSAProcessor

    classes = (MMSAProcessor, MMSAFeatureExtractor, MMSAImageProcessor)
    saved_auto_classes = [cls.__dict__.get("_auto_class") for cls in classes]
    try:
        MMSAProcessor.register_for_auto_class("AutoProcessor")
        MMSAFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
        MMSAImageProcessor.register_for_auto_class("AutoImageProcessor")
        custom_processor.save_pretrained(tmp_path / "repo")
    finally:
        for cls, value in zip(classes, saved_auto_classes):
            cls._auto_class = value
    files = {p.name for p in (tmp_path / "repo").iterdir()}
    assert {"processing_mmsa.py", "feature_extraction_mmsa.py", "image_processing_mmsa.py"} <= files
    config = json.loads((tmp_path / "repo" / "processor_config.json").read_text())
    assert config["auto_map"]["AutoProcessor"] == "processing_mmsa.MMSAProcessor"

    expected = custom_processor([bbbp[12]], num_proc=1, return_tensors="np")
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from transformers import AutoProcessor
        processor = AutoProcessor.from_pretrained({str(tmp_path / "repo")!r}, trust_remote_code=True)
        assert type(processor).__name__ == "MMSAProcessor", type(processor)
        assert "mmsa_hf" not in sys.modules and not type(processor).__module__.startswith("mmsa_hf")
        out = processor([{bbbp[12]!r}], num_proc=1, return_tensors="np")
        np.savez({str(tmp_path / "out.npz")!r}, **{{k: v for k, v in out.items() if k != "smiles"}})
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, env=env, timeout=300)
    got = dict(np.load(tmp_path / "out.npz"))
    for key, value in expected.items():
        if key != "smiles":
            assert (got[key] == value).all(), key
