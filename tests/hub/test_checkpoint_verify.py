"""verify_checkpoint: truncated / corrupted safetensors are reported with the file name (no server needed)."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from mmsa_hf.hub import CorruptCheckpointError, verify_checkpoint


@pytest.fixture
def ckpt(tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    save_file({"a.weight": torch.randn(4, 3), "b.bias": torch.arange(5, dtype=torch.int64),
               "c": torch.zeros(2, 2, dtype=torch.bfloat16)}, str(d / "model.safetensors"), metadata={"format": "pt"})
    (d / "config.json").write_text("{}")
    return d


def _rewrite(path, fn):
    data = path.read_bytes()
    path.write_bytes(fn(data))


def test_valid_checkpoint_passes(ckpt):
    assert verify_checkpoint(ckpt) == [ckpt / "model.safetensors"]
    assert verify_checkpoint(ckpt / "model.safetensors") == [ckpt / "model.safetensors"]


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda d: d[: len(d) // 2], "truncated"),
        (lambda d: d[:-1], "truncated"),
        (lambda d: d[:5], "less than the 8-byte"),
        (lambda d: b"", "less than the 8-byte"),
        (lambda d: d + b"\0" * 7, "trailing bytes"),
        (lambda d: d[:8] + b"[" + d[9:], "not valid JSON"),
        (lambda d: struct.pack("<Q", 10**12) + d[8:], "invalid header length"),
        (lambda d: d[:8 + struct.unpack("<Q", d[:8])[0] - 5], "truncated: the header needs"),
    ],
    ids=["half", "last-byte", "tiny", "empty", "trailing", "bad-json", "huge-header", "cut-in-header"],
)
def test_corruption_is_named(ckpt, mutate, reason):
    f = ckpt / "model.safetensors"
    _rewrite(f, mutate)
    with pytest.raises(CorruptCheckpointError, match=reason) as e:
        verify_checkpoint(ckpt)
    assert e.value.path == str(f) and str(f) in str(e.value)
    assert isinstance(e.value, OSError)


def test_inconsistent_header_offsets(ckpt):
    f = ckpt / "model.safetensors"
    data = f.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    begin, end = header["a.weight"]["data_offsets"]
    header["a.weight"]["shape"] = [4, 4]  # 64 bytes needed, 48 declared
    raw = json.dumps(header).encode()
    f.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    with pytest.raises(CorruptCheckpointError, match="a.weight"):
        verify_checkpoint(ckpt)


def test_sharded_checkpoint(tmp_path):
    d = tmp_path / "sharded"
    d.mkdir()
    save_file({"x": torch.ones(3)}, str(d / "model-00001-of-00002.safetensors"))
    save_file({"y": torch.ones(2)}, str(d / "model-00002-of-00002.safetensors"))
    index = {"metadata": {}, "weight_map": {"x": "model-00001-of-00002.safetensors",
                                            "y": "model-00002-of-00002.safetensors"}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    assert len(verify_checkpoint(d)) == 2
    _rewrite(d / "model-00002-of-00002.safetensors", lambda b: b[:-3])
    with pytest.raises(CorruptCheckpointError, match="model-00002-of-00002.safetensors"):
        verify_checkpoint(d)
    (d / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CorruptCheckpointError, match="does not exist"):
        verify_checkpoint(d)


def test_pickled_only_checkpoint_is_refused(tmp_path):
    d = tmp_path / "pickled"
    d.mkdir()
    torch.save({"w": torch.ones(1)}, d / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="never unpickles"):
        verify_checkpoint(d)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="No model.safetensors"):
        verify_checkpoint(empty)


def test_transformers_alone_raises_but_does_not_name_the_file(ckpt):
    """Why the guard exists: transformers 5.x raises on a truncated file (no silent random init) but the
    SafetensorError does not say which file. If this starts failing, re-check whether the guard is still needed."""
    from safetensors import SafetensorError
    from transformers import BertConfig, BertModel

    model_dir = ckpt.parent / "bert"
    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         vocab_size=50)).save_pretrained(model_dir)
    _rewrite(model_dir / "model.safetensors", lambda b: b[: len(b) // 2])
    with pytest.raises(SafetensorError) as e:
        BertModel.from_pretrained(model_dir)
    assert "model.safetensors" not in str(e.value)
    with pytest.raises(CorruptCheckpointError, match="model.safetensors"):
        verify_checkpoint(model_dir)


def test_safetensor_error_while_loading_names_the_file(ckpt, monkeypatch):
    """Weights damaged after `verify_checkpoint` ran: the SafetensorError of `from_pretrained` (which names no file)
    comes out of `load_model` as a CorruptCheckpointError naming it."""
    from transformers import BertConfig, BertModel

    import mmsa_hf.hub as hub

    model_dir = ckpt.parent / "bert"
    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         vocab_size=50)).save_pretrained(model_dir)
    weights = model_dir / "model.safetensors"
    monkeypatch.setattr(hub, "verify_checkpoint", lambda path, check_hash=True: [weights])
    _rewrite(weights, lambda b: b[: len(b) // 2])
    with pytest.raises(CorruptCheckpointError) as e:
        hub.load_model(model_dir, model_class=BertModel)
    assert e.value.path == str(weights) and str(weights) in str(e.value)
