"""``mmsa embed`` / ``mmsa predict`` featurize every molecule once: an invalid molecule's placeholder record carries
the reason the processor gave, which is what the report shows (no second featurization to recover it)."""

from __future__ import annotations

import json

import pytest

import mmsa_hf.inference as inference
from mmsa_hf import MMSAImageProcessor, MMSAProcessor
from mmsa_hf.cli import main
from mmsa_hf.inference import report_path


def _reason(processor, smiles: str) -> str:
    with pytest.raises(Exception) as caught:
        processor.featurize_one(smiles)
    return str(caught.value) or type(caught.value).__name__


def test_placeholder_records_hold_the_reason(smiles, bad_indices):
    processor = MMSAProcessor(image_processor=MMSAImageProcessor(image_size=64), views=("graph",))
    records = inference._featurize_molecules(processor, smiles)
    assert [r["input_index"] for r in records] == list(range(len(smiles)))
    assert [i for i, r in enumerate(records) if not r["valid"]] == bad_indices
    for i in bad_indices:
        assert records[i]["error"] == _reason(processor, smiles[i])
        assert records[i]["smiles"] == ""
    assert all("error" not in r for r in records if r["valid"])


@pytest.mark.parametrize("num_proc", ["1", "2"])
def test_each_molecule_is_featurized_once(tmp_path, property_dir, inputs, smiles, bad_indices, num_proc,
                                          monkeypatch, capsys):
    calls = []
    featurize_one = MMSAProcessor.featurize_one

    def counted(self, molecule, *args, **kwargs):
        calls.append(molecule)
        return featurize_one(self, molecule, *args, **kwargs)

    monkeypatch.setattr(MMSAProcessor, "featurize_one", counted)
    output = tmp_path / "pred.parquet"
    assert main(["predict", "--model", str(property_dir), "--input", str(inputs["csv"]), "--output", str(output),
                 "--no-progress", "--chunk-size", "10", "--num-proc", num_proc]) == 0
    if num_proc == "1":  # the workers' calls are not seen here
        assert sorted(calls) == sorted(smiles)
    report = json.loads(report_path(output).read_text())
    processor = MMSAProcessor.from_pretrained(property_dir)
    assert [row["input_index"] for row in report["bad_row_details"]] == bad_indices
    assert [row["error"] for row in report["bad_row_details"]] == [_reason(processor, smiles[i]) for i in bad_indices]
    assert "invalid molecules" not in capsys.readouterr().err  # the processor's batch warning is not involved


def test_the_writer_is_chosen_by_the_output_suffix(tmp_path):
    from mmsa_hf.atomic import PendingFiles

    layout = inference._OutputLayout([inference._ValueColumn("embedding", 3)], total_rows=2, skip=False)
    for suffix, writer_class in (("csv", inference._CsvWriter), ("npy", inference._NpyWriter),
                                 ("parquet", inference._ParquetWriter)):
        pending = PendingFiles()
        writer = inference._open_writer(tmp_path / f"out.{suffix}", layout, pending)
        assert type(writer) is writer_class and isinstance(writer, inference._OutputWriter)
        writer.abort()
        assert list(tmp_path.iterdir()) == []  # nothing left behind
