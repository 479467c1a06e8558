"""Streaming batch inference: embeddings (``mmsa embed``) and property predictions (``mmsa predict``).

Input is read in chunks (CSV/TSV/Parquet with a SMILES column, or ``.smi`` files), featurized
with the model's processor (in parallel over ``num_proc`` cores), run through the model and
written chunk by chunk, so memory stays flat in the input size. Output row ``i`` is input row
``i``: under ``on_error="mask"`` (the default here) a bad row gets NaN values and ``valid=False``;
under ``"skip"`` it is left out and the ``input_index`` column (Parquet) or the
``<output>.indices.npy`` file says which rows were written. Every bad row is listed in
``<output>.report.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

SMILES_COLUMN_CANDIDATES = ("smiles", "SMILES", "Smiles", "mol", "canonical_smiles")


def iter_smiles_chunks(path: str | os.PathLike, smiles_column: str | None, chunk_size: int) -> Iterator[list[str]]:
    """Yield lists of SMILES (``chunk_size`` at most) from a CSV/TSV/Parquet or ``.smi`` file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input file not found: {path}")
    name = path.name.lower()
    if name.endswith((".smi", ".smi.gz", ".smiles", ".txt")):
        import gzip

        opener = gzip.open if name.endswith(".gz") else open
        chunk: list[str] = []
        with opener(path, "rt") as handle:
            for line in handle:
                fields = line.strip().split()
                chunk.append(fields[0] if fields else "")
                if len(chunk) == chunk_size:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk
        return
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        column = _pick_column(parquet.schema_arrow.names, smiles_column, path)
        for record_batch in parquet.iter_batches(batch_size=chunk_size, columns=[column]):
            yield [s if s is not None else "" for s in record_batch.column(0).to_pylist()]
        return
    import pandas as pd

    sep = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
    header = pd.read_csv(path, sep=sep, nrows=0).columns.tolist()
    column = _pick_column(header, smiles_column, path)
    for frame in pd.read_csv(path, sep=sep, usecols=[column], chunksize=chunk_size, dtype={column: str},
                             keep_default_na=False):
        yield frame[column].tolist()


def _pick_column(columns: list[str], requested: str | None, path: Path) -> str:
    if requested:
        if requested not in columns:
            raise ValueError(f"{path}: no column {requested!r}; columns are {columns}")
        return requested
    for candidate in SMILES_COLUMN_CANDIDATES:
        if candidate in columns:
            return candidate
    raise ValueError(f"{path}: no SMILES column found (looked for {SMILES_COLUMN_CANDIDATES}); "
                     f"columns are {columns}; pass --smiles-column")


def count_rows(path: str | os.PathLike, smiles_column: str | None) -> int:
    """Number of input rows (one streaming pass)."""
    return sum(len(chunk) for chunk in iter_smiles_chunks(path, smiles_column, 65536))


class _Writer:
    """Chunked writer for ``.parquet`` or ``.npy`` outputs."""

    def __init__(self, output: Path, total_rows: int, columns: dict[str, int], skip: bool):
        self.output, self.columns, self.skip = output, columns, skip
        self.kind = "parquet" if output.suffix == ".parquet" else "npy"
        if self.kind not in ("parquet", "npy") or output.suffix not in (".parquet", ".npy"):
            raise ValueError(f"--output {output}: use a .parquet or .npy file name")
        output.parent.mkdir(parents=True, exist_ok=True)
        self.rows_written = 0
        self.indices: list[np.ndarray] = []
        if self.kind == "npy":
            from numpy.lib.format import open_memmap

            self.arrays = {}
            for i, (name, width) in enumerate(columns.items()):
                target = output if i == 0 else output.with_name(f"{output.stem}.{name}.npy")
                self.arrays[name] = (target, open_memmap(target, mode="w+", dtype=np.float32, shape=(total_rows, width)))
        else:
            self.parquet_writer = None

    def write(self, values: dict[str, np.ndarray], input_index: np.ndarray, smiles: list[str], valid: np.ndarray):
        n = len(input_index)
        if self.kind == "npy":
            for name, (_, array) in self.arrays.items():
                array[self.rows_written:self.rows_written + n] = values[name]
            self.indices.append(input_index)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = {"input_index": pa.array(input_index, pa.int64()), "smiles": pa.array(smiles, pa.string()),
                     "valid": pa.array(valid, pa.bool_())}
            for name, width in self.columns.items():
                flat = pa.array(values[name].reshape(-1).astype(np.float32), pa.float32())
                table[name] = pa.FixedSizeListArray.from_arrays(flat, width)
            table = pa.table(table)
            if self.parquet_writer is None:
                self.parquet_writer = pq.ParquetWriter(self.output, table.schema)
            self.parquet_writer.write_table(table)
        self.rows_written += n

    def close(self) -> list[str]:
        written = [str(self.output)]
        if self.kind == "npy":
            for name, (target, array) in self.arrays.items():
                array.flush()
                written.append(str(target))
            if self.skip:
                from numpy.lib.format import open_memmap

                # Under skip, trim the memmaps to the rows written and record which input rows they are.
                for name, (target, array) in self.arrays.items():
                    trimmed = np.array(array[: self.rows_written])
                    del array
                    np.save(target, trimmed)
                index_file = self.output.with_name(f"{self.output.stem}.indices.npy")
                np.save(index_file, np.concatenate(self.indices) if self.indices else np.zeros(0, np.int64))
                written.append(str(index_file))
        elif self.parquet_writer is not None:
            self.parquet_writer.close()
        return sorted(set(written))


@torch.no_grad()
def run_inference(
    model_id: str,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    mode: str = "embed",
    smiles_column: str | None = None,
    chunk_size: int = 1024,
    batch_size: int = 128,
    num_proc: int | None = None,
    on_error: str = "mask",
    per_view: bool = False,
    revision: str | None = None,
    device: str | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Embed (``mode="embed"``) or predict (``mode="predict"``) every molecule of ``input_path``.

    Returns (and writes as ``<output>.report.json``) a report: rows, bad rows and their indices,
    featurization and model seconds, molecules/s.
    """
    from tqdm.auto import tqdm
    from transformers import AutoProcessor

    from .hub import load_model
    from .modeling import MMSAForMolecularPropertyPrediction, MMSAModel

    if on_error not in ("mask", "skip", "raise"):
        raise ValueError(f"on_error={on_error!r}: use 'mask', 'skip' or 'raise'")
    if mode not in ("embed", "predict"):
        raise ValueError(f"mode={mode!r}: use 'embed' or 'predict'")
    model_class = MMSAModel if mode == "embed" else MMSAForMolecularPropertyPrediction
    model = load_model(model_id, model_class=model_class, revision=revision)
    processor = AutoProcessor.from_pretrained(model_id, revision=revision)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    num_proc = num_proc or max(1, (os.cpu_count() or 1))

    total = count_rows(input_path, smiles_column)
    config = model.config
    if mode == "embed":
        columns = {"embedding": config.hidden_size}
        if per_view:
            for view in model.enabled_views():
                columns[f"{view}_embedding"] = config.hidden_size
    else:
        columns = {"prediction": config.num_labels}
    writer = _Writer(Path(output_path), total, columns, skip=on_error == "skip")
    bad_rows: list[dict[str, Any]] = []
    featurize_s = model_s = 0.0
    offset = 0
    progress = tqdm(total=total, desc=f"mmsa {mode}", unit="mol", disable=not show_progress)
    for chunk in iter_smiles_chunks(input_path, smiles_column, chunk_size):
        t0 = time.perf_counter()
        records = processor.featurize(chunk, on_error="mask" if on_error != "raise" else "raise", num_proc=num_proc,
                                      show_progress=False)
        featurize_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        values = {name: np.full((len(chunk), width), np.nan, np.float32) for name, width in columns.items()}
        for start in range(0, len(records), batch_size):
            batch = processor.collate(records[start:start + batch_size])
            inputs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            outputs = model(**inputs)
            rows = slice(start, start + len(records[start:start + batch_size]))
            if mode == "embed":
                values["embedding"][rows] = outputs.unified_embedding.float().cpu().numpy()
                if per_view:
                    for view in model.enabled_views():
                        values[f"{view}_embedding"][rows] = outputs.view_embeddings[view].float().cpu().numpy()
            else:
                values["prediction"][rows] = model.predict_from_logits(outputs.logits).float().cpu().numpy()
        model_s += time.perf_counter() - t0
        valid = np.array([bool(r["valid"]) for r in records])
        for local in np.flatnonzero(~valid):
            bad_rows.append({"input_index": offset + int(local), "smiles": chunk[local]})
            for name in values:
                values[name][local] = np.nan
        keep = valid if on_error == "skip" else np.ones(len(chunk), bool)
        writer.write({k: v[keep] for k, v in values.items()}, np.arange(offset, offset + len(chunk))[keep],
                     [r["smiles"] for r, k in zip(records, keep) if k], valid[keep])
        offset += len(chunk)
        progress.update(len(chunk))
    progress.close()
    files = writer.close()
    report = {
        "model": model_id,
        "input": str(input_path),
        "mode": mode,
        "rows": total,
        "rows_written": writer.rows_written,
        "on_error": on_error,
        "bad_rows": len(bad_rows),
        "bad_row_details": bad_rows,
        "featurize_seconds": featurize_s,
        "model_seconds": model_s,
        "molecules_per_s": total / max(featurize_s + model_s, 1e-9),
        "model_molecules_per_s": total / max(model_s, 1e-9),
        "featurize_molecules_per_s": total / max(featurize_s, 1e-9),
        "num_proc": num_proc,
        "files": files,
    }
    report_path = Path(output_path).with_name(Path(output_path).stem + ".report.json")
    report_path.write_text(json.dumps(report, indent=2))
    return report
