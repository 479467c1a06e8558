"""Streaming batch inference: embeddings (``mmsa embed``) and property predictions (``mmsa predict``).

Input is read in chunks (CSV / TSV / Parquet with a SMILES column, or ``.smi`` files, optionally gzipped),
featurized with the checkpoint's processor (in parallel over ``num_proc`` cores), run through the model in eval
mode under ``torch.inference_mode()`` in batches of ``batch_size``, and written chunk by chunk, so memory stays
flat in the input size.

Only the views the model reads are computed (:func:`processor_for_model`): ``predict`` reads
``config.downstream_modalities`` (a graph-only fine-tuned model: no conformer, no depiction), ``embed`` every
enabled view of the backbone.

Output row ``i`` is input row ``i`` (for ``.smi`` input: line ``i``, 0-based):

* ``on_error="mask"`` (the default): a bad row is written with NaN values and ``valid=False``;
* ``on_error="skip"``: a bad row is left out; the ``input_index`` column (Parquet, CSV) or the
  ``<stem>.indices.npy`` file (NumPy) gives the input row of every written row;
* ``on_error="raise"``: the first bad row stops the run (``InferenceInputError`` naming the row) and the partial
  outputs are removed.

Files written:

* ``.parquet``: one row per molecule with ``input_index``, ``smiles`` (as given), ``canonical_smiles``
  (``""`` for a bad row), ``valid``, then ``embedding`` (a fixed-size list of ``hidden_size`` float32) and, with
  ``per_view``, ``graph_embedding`` / ``image_embedding`` / ``geometry_embedding``; for predictions one float32
  column per task (named after ``config.id2label`` when it holds real names, else ``task_0``, ``task_1``...).
* ``.csv``: the Parquet columns as text (what chemprop writes and spreadsheets open); an embedding is spread over
  ``embedding_0`` ... ``embedding_{hidden_size-1}`` (``graph_embedding_0`` ... with ``per_view``), refused above
  :data:`MAX_CSV_VALUE_COLUMNS` columns; NaN is an empty cell; floats are written with 9 significant digits
  (exact for float32).
* ``.npy``: a float32 ``[rows, width]`` array, written front to back (the row count is counted first, and the
  file's blocks are reserved up front with ``os.posix_fallocate``: no memory map and no sparse file, so a full
  disk is a clean ``OSError: No space left on device`` naming the file, never a SIGBUS); per-view embeddings go to
  ``<stem>.<view>_embedding.npy`` and, under ``skip``, the input indices to ``<stem>.indices.npy``.
* always ``<output>.report.json`` (e.g. ``emb.parquet.report.json``): row counts, every bad row (input index,
  SMILES, reason), the masked or skipped indices, the prediction column names, the views computed and the timings
  (``featurize_seconds`` is the time spent waiting for featurization, which runs ahead of the model in
  ``num_proc`` worker processes; ``model_seconds`` the forward passes).

Never a half-written file: every file above is written to a temporary name in the output's directory
(``.<name>.partial-<pid>-<random>``, see :mod:`mmsa_hf.atomic`), fsynced, and renamed to its final name only when
the whole run has succeeded (the outputs first, the report last). On an error, or SIGINT / SIGTERM under the
``mmsa`` command, the temporary files are removed and a file already at the output path is left untouched; two
runs writing the same output never interleave (the last one to finish wins whole).
"""

from __future__ import annotations

import abc
import collections
import contextlib
import dataclasses
import gzip
import json
import logging
import os
import re
import struct
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .atomic import PendingFiles, preallocate, raise_if_interrupted, reset_signals_in_child
from .data.corpus import SMILES_COLUMN_CANDIDATES  # one list for corpora and inference

SMI_SUFFIXES = (".smi", ".smiles", ".txt")
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
OUTPUT_SUFFIXES = (".parquet", ".npy", ".csv")
#: the widest CSV output (value columns); wider embeddings go to .parquet or .npy
MAX_CSV_VALUE_COLUMNS = 4096
CSV_FLOAT_FORMAT = "%.9g"  # 9 significant digits round-trip float32 exactly
PROPERTY_ARCHITECTURE = "MMSAForMolecularPropertyPrediction"
_DEFAULT_LABEL = re.compile(r"^LABEL_\d+$")
_FIXED_COLUMNS = ("input_index", "smiles", "canonical_smiles", "valid")


class InferenceInputError(ValueError):
    """A problem with the user's input or options (bad file, missing column, bad molecule under ``raise``)."""


# ------------------------------------------------------------------------------------------------------------------
# input
# ------------------------------------------------------------------------------------------------------------------


def input_format(path: str | os.PathLike) -> str:
    """``"smi"``, ``"csv"``, ``"tsv"`` or ``"parquet"`` from the file name (a ``.gz`` suffix is allowed for text)."""
    name = Path(path).name.lower()
    base = name[:-3] if name.endswith(".gz") else name
    if base.endswith(SMI_SUFFIXES):
        return "smi"
    for suffix in TABLE_SUFFIXES:
        if base.endswith(suffix):
            return suffix[1:]
    if name.endswith(".parquet"):
        return "parquet"
    raise InferenceInputError(
        f"input file {path}: unsupported format; use .csv, .tsv, .parquet (with a SMILES column) or .smi "
        "(.csv/.tsv/.smi may be gzipped)"
    )


def _check_input(path: str | os.PathLike) -> Path:
    """``path`` as a ``Path`` after checking it is an existing file of a supported input format."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input file not found: {path}")
    if path.is_dir():
        raise InferenceInputError(f"input {path} is a directory, not a file")
    input_format(path)
    return path


def _pick_column(columns: list[str], requested: str | None, path: Path) -> str:
    """The SMILES column, chosen exactly as for pretraining corpora (``mmsa_hf.data.detect_smiles_column``)."""
    from .data.corpus import detect_smiles_column

    try:
        return detect_smiles_column(columns, requested, source=f"input file {path}")
    except ValueError as error:
        raise InferenceInputError(f"{error}. Name the column with --smiles-column.") from None


def resolve_smiles_column(path: str | os.PathLike, smiles_column: str | None) -> str | None:
    """The SMILES column of a table (``None`` for ``.smi`` files); raises naming the file and its columns."""
    path = _check_input(path)
    fmt = input_format(path)
    if fmt == "smi":
        return None
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return _pick_column(pq.ParquetFile(path).schema_arrow.names, smiles_column, path)
    import pandas as pd

    try:
        header = pd.read_csv(path, sep=TABLE_SUFFIXES["." + fmt], nrows=0).columns.tolist()
    except pd.errors.EmptyDataError:
        raise InferenceInputError(f"input file {path} is empty (no header row)") from None
    return _pick_column(header, smiles_column, path)


def iter_smiles_chunks(path: str | os.PathLike, smiles_column: str | None, chunk_size: int) -> Iterator[list[str]]:
    """Yield lists of at most ``chunk_size`` SMILES, in file order, streaming (never the whole file at once).

    ``.smi``: one molecule per line, the SMILES is the first whitespace-separated field (an empty line is an
    empty, hence invalid, SMILES so that row ``i`` stays line ``i``). Tables: the ``smiles_column`` (default: the
    first of :data:`SMILES_COLUMN_CANDIDATES` present); missing values are read as ``""``.
    """
    if chunk_size < 1:
        raise InferenceInputError(f"chunk_size must be >= 1, got {chunk_size}")
    path = _check_input(path)
    fmt = input_format(path)
    column = resolve_smiles_column(path, smiles_column)
    if fmt == "smi":
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        chunk: list[str] = []
        with opener(path, "rt") as handle:
            for line in handle:
                fields = line.split()
                chunk.append(fields[0] if fields else "")
                if len(chunk) == chunk_size:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk
        return
    if fmt == "parquet":
        import pyarrow.parquet as pq

        for record_batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_size, columns=[column]):
            yield ["" if s is None else str(s) for s in record_batch.column(0).to_pylist()]
        return
    import pandas as pd

    reader = pd.read_csv(path, sep=TABLE_SUFFIXES["." + fmt], usecols=[column], chunksize=chunk_size,
                         dtype={column: str}, keep_default_na=False)
    with reader:
        for frame in reader:
            yield ["" if s is None else str(s) for s in frame[column].tolist()]


def count_rows(path: str | os.PathLike, smiles_column: str | None = None) -> int:
    """Number of input rows (Parquet: from the metadata; text: one streaming pass)."""
    path = _check_input(path)
    if input_format(path) == "parquet":
        import pyarrow.parquet as pq

        resolve_smiles_column(path, smiles_column)
        return int(pq.ParquetFile(path).metadata.num_rows)
    return sum(len(chunk) for chunk in iter_smiles_chunks(path, smiles_column, 65536))


# ------------------------------------------------------------------------------------------------------------------
# output
# ------------------------------------------------------------------------------------------------------------------


def output_kind(path: str | os.PathLike) -> str:
    """``"parquet"``, ``"npy"`` or ``"csv"``; raises :class:`InferenceInputError` for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise InferenceInputError(
            f"output file {path}: unsupported extension {suffix or '(none)'!r}; use a .parquet, .npy or .csv "
            "file name"
        )
    return suffix[1:]


def report_path(output_path: str | os.PathLike) -> Path:
    """``<output>.report.json``."""
    output_path = Path(output_path)
    return output_path.with_name(output_path.name + ".report.json")


def sidecar_path(output_path: str | os.PathLike, name: str) -> Path:
    """``<stem>.<name>.npy`` next to a ``.npy`` output (per-view embeddings, ``indices``)."""
    output_path = Path(output_path)
    return output_path.with_name(f"{output_path.stem}.{name}.npy")


def prediction_columns(config) -> list[str]:
    """One name per model output: ``config.id2label`` if it holds real names, else ``task_0``, ``task_1``..."""
    n = int(config.num_labels)
    id2label = getattr(config, "id2label", None) or {}
    names = [id2label.get(i, id2label.get(str(i))) for i in range(n)]
    if all(isinstance(name, str) and name and not _DEFAULT_LABEL.match(name) for name in names) \
            and len(set(names)) == n:
        # a task named like a fixed output column gets a prefix
        return [f"prediction_{name}" if name in _FIXED_COLUMNS else name for name in names]
    return [f"task_{i}" for i in range(n)]


def csv_value_columns(columns: dict[str, int], prediction_names: list[str] | None) -> list[str]:
    """The value columns of a CSV output: the task names, or ``<name>_<j>`` for each embedding dimension."""
    if prediction_names is not None:
        return list(prediction_names)
    return [f"{name}_{j}" for name, width in columns.items() for j in range(width)]


def _named_disk_error(err: OSError, target: Path, force: bool = False) -> OSError:
    """An ``OSError`` for a failed write that names the output (Python's own ENOSPC names no file; pyarrow's
    names the temporary file at best, hence ``force``)."""
    if (force or err.filename is None) and err.errno is not None:
        return OSError(err.errno, os.strerror(err.errno), str(target))
    return err


@dataclasses.dataclass(frozen=True)
class _ValueColumn:
    """One model output written for every row: ``width`` float32 values under ``name``.

    ``task_names`` is set for predictions: the values are separate named scalars (one Parquet / CSV column per
    task); otherwise (an embedding) they are one vector (a Parquet list column, ``<name>_<j>`` CSV columns)."""

    name: str
    width: int
    task_names: tuple[str, ...] | None = None

    def scalar_names(self) -> list[str]:
        """The names of its values one by one (the CSV columns)."""
        if self.task_names is not None:
            return list(self.task_names)
        return [f"{self.name}_{j}" for j in range(self.width)]


def _value_columns(columns: dict[str, int], prediction_names: list[str] | None) -> list[_ValueColumn]:
    """The value columns of an output: ``columns`` (name -> width) in order; with ``prediction_names`` (predict
    mode) ``columns`` is the single ``prediction`` column and its values are the named tasks."""
    names = None if prediction_names is None else tuple(prediction_names)
    return [_ValueColumn(name, width, names) for name, width in columns.items()]


def csv_value_columns(columns: dict[str, int], prediction_names: list[str] | None) -> list[str]:
    """The value columns of a CSV output: the task names, or ``<name>_<j>`` for each embedding dimension."""
    return [name for column in _value_columns(columns, prediction_names) for name in column.scalar_names()]


@dataclasses.dataclass(frozen=True)
class _OutputLayout:
    """What a run writes: its ``value_columns`` (in order), the input row count ``total_rows`` (counted before
    the run) and whether bad rows are left out (``skip``, ``on_error="skip"``)."""

    value_columns: list[_ValueColumn]
    total_rows: int
    skip: bool


@dataclasses.dataclass
class _OutputRows:
    """The rows of one chunk, as written: ``values[name]`` float32 ``[n, width]`` per value column, the input row
    of each (``input_index``), its SMILES as given, its canonical SMILES (``""`` for a bad row) and ``valid``."""

    values: dict[str, np.ndarray]
    input_index: np.ndarray
    smiles: list[str]
    canonical_smiles: list[str]
    valid: np.ndarray

    def __len__(self) -> int:
        return len(self.input_index)

    def fixed_columns(self) -> tuple:
        """The values of :data:`_FIXED_COLUMNS`, in that order."""
        return self.input_index, self.smiles, self.canonical_smiles, self.valid


class _OutputWriter(abc.ABC):
    """The output file(s) of one run, written chunk by chunk to temporary names registered in ``pending`` (see
    :class:`~mmsa_hf.atomic.PendingFiles`; the caller commits them once the whole run has succeeded). One subclass
    per output format, chosen by :func:`_open_writer`."""

    def __init__(self, output: Path, layout: _OutputLayout, pending: PendingFiles):
        self.output, self.layout, self.pending = output, layout, pending
        self.rows_written = 0

    def write(self, rows: _OutputRows) -> None:
        """Append the rows of one chunk."""
        self._append(rows)
        self.rows_written += len(rows)

    @abc.abstractmethod
    def _append(self, rows: _OutputRows) -> None:
        """Write ``rows`` to the temporary file(s)."""

    @abc.abstractmethod
    def close(self) -> list[str]:
        """Finish the temporary file(s) (complete, flushed); return the final paths they will be committed to."""

    @abc.abstractmethod
    def _close_quietly(self) -> None:
        """Close what is open after an error, ignoring further errors."""

    def abort(self) -> None:
        """Remove the temporary file(s) (after an error); earlier files at the outputs are untouched."""
        self._close_quietly()
        self.pending.discard()


class _CsvWriter(_OutputWriter):
    """A ``.csv`` output: the fixed columns, then one column per task or embedding dimension."""

    def __init__(self, output: Path, layout: _OutputLayout, pending: PendingFiles):
        super().__init__(output, layout, pending)
        self.header = [name for column in layout.value_columns for name in column.scalar_names()]
        if len(self.header) > MAX_CSV_VALUE_COLUMNS:
            raise InferenceInputError(
                f"output file {output}: {len(self.header)} value columns is too wide for a CSV "
                f"(at most {MAX_CSV_VALUE_COLUMNS}); write a .parquet or .npy file instead"
            )
        self.handle = open(pending.temp_for(output), "w", newline="")
        self.handle.write(",".join(_csv_quote(c) for c in (*_FIXED_COLUMNS, *self.header)) + "\n")

    def _append(self, rows: _OutputRows) -> None:
        import pandas as pd

        matrix = np.concatenate([np.asarray(rows.values[column.name], np.float32).reshape(len(rows), -1)
                                 for column in self.layout.value_columns], axis=1)
        frame = pd.DataFrame(matrix, columns=self.header)
        for position, (name, values) in enumerate(zip(_FIXED_COLUMNS, rows.fixed_columns())):
            frame.insert(position, name, values)
        try:
            frame.to_csv(self.handle, header=False, index=False, float_format=CSV_FLOAT_FORMAT,
                         lineterminator="\n")
        except OSError as err:
            raise _named_disk_error(err, self.output) from None

    def close(self) -> list[str]:
        """Flush, fsync and close the temporary file; return the final path."""
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
        except OSError as err:
            raise _named_disk_error(err, self.output) from None
        return [str(self.output)]

    def _close_quietly(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()


def _csv_quote(name: str) -> str:
    """``name`` as a CSV header cell (quoted when it holds a comma, a quote or a newline)."""
    return '"' + name.replace('"', '""') + '"' if any(c in name for c in ',"\n') else name


class _ParquetWriter(_OutputWriter):
    """A ``.parquet`` output, one row group per chunk: the fixed columns, then per value column one
    ``float32`` column per task (predictions) or one fixed-size list of ``float32`` (an embedding)."""

    def __init__(self, output: Path, layout: _OutputLayout, pending: PendingFiles):
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(output, layout, pending)
        fields = [pa.field(name, kind) for name, kind in zip(
            _FIXED_COLUMNS, (pa.int64(), pa.string(), pa.string(), pa.bool_()))]
        for column in layout.value_columns:
            if column.task_names is None:
                fields.append(pa.field(column.name, pa.list_(pa.float32(), column.width)))
            else:
                fields += [pa.field(name, pa.float32()) for name in column.task_names]
        self.schema = pa.schema(fields)
        try:
            self.parquet_writer = pq.ParquetWriter(pending.temp_for(output), self.schema)
        except OSError as err:
            raise _named_disk_error(err, output, force=True) from None

    def _append(self, rows: _OutputRows) -> None:
        import pyarrow as pa

        arrays = [pa.array(rows.input_index, pa.int64()), pa.array(rows.smiles, pa.string()),
                  pa.array(rows.canonical_smiles, pa.string()), pa.array(rows.valid, pa.bool_())]
        for column in self.layout.value_columns:
            arrays += _parquet_arrays(column, rows.values[column.name])
        try:
            self.parquet_writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        except OSError as err:  # pyarrow's message names no file
            raise _named_disk_error(err, self.output, force=True) from None

    def close(self) -> list[str]:
        """Write the footer of the temporary file (fsynced by the commit); return the final path."""
        try:
            self.parquet_writer.close()
        except OSError as err:
            raise _named_disk_error(err, self.output, force=True) from None
        return [str(self.output)]

    def _close_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.parquet_writer.close()


def _parquet_arrays(column: _ValueColumn, values: np.ndarray) -> list:
    """The Arrow arrays of ``column`` for ``values`` (``[n, width]``), in the order of its schema fields."""
    import pyarrow as pa

    if column.task_names is None:
        flat = pa.array(np.ascontiguousarray(values, np.float32).reshape(-1), pa.float32())
        return [pa.FixedSizeListArray.from_arrays(flat, column.width)]
    return [pa.array(np.ascontiguousarray(values[:, j], np.float32), pa.float32()) for j in range(column.width)]


def _npy_header(shape: tuple[int, ...], dtype, length: int | None = None) -> bytes:
    """A version 1.0 ``.npy`` header for a C-order array, padded with spaces to ``length`` bytes (default: the
    next multiple of 64), so a header for fewer rows can overwrite it in place."""
    body = repr({"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                 "shape": tuple(int(d) for d in shape)}).encode("latin1")
    size = length if length is not None else -(-(10 + len(body) + 1) // 64) * 64
    padding = size - 10 - len(body) - 1
    if padding < 0 or size - 10 > 0xFFFF:
        raise ValueError(f".npy header for shape {shape} does not fit in {size} bytes")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", size - 10) + body + b" " * padding + b"\n"


class _NpyFile:
    """One ``.npy`` array written front to back (no memory map, no sparse file): the header for ``rows`` rows,
    preallocated with ``posix_fallocate``, then the rows as they come; :meth:`finish` rewrites the header and
    trims the file when fewer rows were written (``on_error="skip"``)."""

    def __init__(self, temp: Path, target: Path, rows: int, width: int | None, dtype):
        self.target, self.dtype, self.rows = target, np.dtype(dtype), rows
        self.tail = () if width is None else (width,)
        self.row_bytes = self.dtype.itemsize * (1 if width is None else width)
        self.header = _npy_header((rows, *self.tail), self.dtype)
        self.handle = open(temp, "wb")
        try:
            preallocate(self.handle, len(self.header) + rows * self.row_bytes, target)
            self.handle.write(self.header)
        except BaseException:
            self.handle.close()
            raise

    def append(self, array: np.ndarray) -> None:
        """Write the rows of ``array`` after those already written."""
        try:
            self.handle.write(np.ascontiguousarray(array, self.dtype).tobytes())
        except OSError as err:
            raise _named_disk_error(err, self.target) from None

    def finish(self, rows: int) -> None:
        """Set the row count to ``rows`` (when fewer than planned), flush and fsync, close."""
        try:
            if rows != self.rows:
                self.handle.seek(0)
                self.handle.write(_npy_header((rows, *self.tail), self.dtype, len(self.header)))
                self.handle.truncate(len(self.header) + rows * self.row_bytes)
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
        except OSError as err:
            raise _named_disk_error(err, self.target) from None

    def close_quietly(self) -> None:
        """Close the file after an error, ignoring further errors."""
        with contextlib.suppress(OSError):
            self.handle.close()


class _NpyWriter(_OutputWriter):
    """``.npy`` outputs written front to back (no memory map, so a full disk is an ``OSError``, never a SIGBUS):
    the first value column at the output path, the others at ``<stem>.<name>.npy``, and under ``skip`` the input
    row of every written row at ``<stem>.indices.npy``."""

    def __init__(self, output: Path, layout: _OutputLayout, pending: PendingFiles):
        super().__init__(output, layout, pending)
        self.files: dict[str, _NpyFile] = {}  # value column name or "input_index" -> its file
        try:
            for i, column in enumerate(layout.value_columns):
                target = output if i == 0 else sidecar_path(output, column.name)
                self._open(column.name, target, column.width, np.float32)
            if layout.skip:
                self._open("input_index", sidecar_path(output, "indices"), None, np.int64)
        except BaseException:
            self.abort()
            raise

    def _open(self, key: str, target: Path, width: int | None, dtype) -> None:
        """Start the temporary file of ``target``, sized for every input row."""
        self.files[key] = _NpyFile(self.pending.temp_for(target), target, self.layout.total_rows, width, dtype)

    def _append(self, rows: _OutputRows) -> None:
        if self.rows_written + len(rows) > self.layout.total_rows:
            raise InferenceInputError("the input grew while it was being read (more rows than counted)")
        for column in self.layout.value_columns:
            self.files[column.name].append(rows.values[column.name])
        if self.layout.skip:
            self.files["input_index"].append(rows.input_index)

    def close(self) -> list[str]:
        """Finish the temporary files (row count set, fsynced); return the final paths."""
        if not self.layout.skip and self.rows_written != self.layout.total_rows:
            raise InferenceInputError(
                f"the input shrank while it was being read ({self.rows_written} rows instead of "
                f"{self.layout.total_rows})"
            )
        for npy in self.files.values():
            npy.finish(self.rows_written)
        return [str(npy.target) for npy in self.files.values()]

    def _close_quietly(self) -> None:
        for npy in self.files.values():
            npy.close_quietly()


_WRITERS: dict[str, type[_OutputWriter]] = {"csv": _CsvWriter, "npy": _NpyWriter, "parquet": _ParquetWriter}


def _open_writer(output: Path, layout: _OutputLayout, pending: PendingFiles) -> _OutputWriter:
    """The writer for ``output``'s format (from its suffix, see the module docstring); its files are temporary
    names registered in ``pending`` until the caller commits them (removed again if opening fails)."""
    writer_class = _WRITERS[output_kind(output)]
    try:
        return writer_class(output, layout, pending)
    except BaseException:
        pending.discard()  # e.g. a full disk before the first row
        raise


# ------------------------------------------------------------------------------------------------------------------
# inference
# ------------------------------------------------------------------------------------------------------------------


def _checkpoint_architectures(directory: Path) -> list[str]:
    """The ``architectures`` of the checkpoint in ``directory`` (from its ``config.json``)."""
    try:
        config = json.loads((directory / "config.json").read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no config.json in {directory}: not a saved MMSA checkpoint") from None
    return list(config.get("architectures") or [])


def load_for_inference(model_id: str, mode: str = "embed", revision: str | None = None):
    """(model, processor, checkpoint directory) for ``mode`` ("embed": ``MMSAModel`` from any MMSA checkpoint;
    "predict": ``MMSAForMolecularPropertyPrediction``, refused for a checkpoint that is not a property model)."""
    from .hub import load_model, load_processor, resolve_checkpoint_dir
    from .modeling import MMSAForMolecularPropertyPrediction, MMSAModel

    try:
        directory = resolve_checkpoint_dir(model_id, revision)
    except ValueError as err:  # e.g. a revision given for a local directory
        raise InferenceInputError(str(err)) from None
    architectures = _checkpoint_architectures(directory)
    if mode == "predict" and PROPERTY_ARCHITECTURE not in architectures:
        raise InferenceInputError(
            f"mmsa predict needs a fine-tuned {PROPERTY_ARCHITECTURE} checkpoint, but {model_id} is "
            f"{', '.join(architectures) or 'of an unknown class'} (use mmsa embed for its embeddings)"
        )
    model_class = MMSAModel if mode == "embed" else MMSAForMolecularPropertyPrediction
    model = load_model(directory, model_class=model_class)
    try:
        processor = load_processor(directory)
    except OSError as err:
        raise FileNotFoundError(f"{model_id}: no processor saved with the checkpoint ({err})") from None
    return model, processor, directory


def processor_for_model(processor, model, mode: str = "predict"):
    """``processor`` computing exactly the views ``model`` reads in ``mode`` (a copy when they differ).

    ``"predict"`` reads ``config.downstream_modalities`` (``("graph",)`` for a graph-only fine-tuned model: no
    conformer embedding, no drawing); ``"embed"`` runs the ``MMSAModel`` backbone, which reads every enabled view.
    A processor without a ``views`` setting (older remote code) is returned as is.
    """
    from .training.common import views_for_config

    views = views_for_config(model.config, "property" if mode == "predict" else "backbone")
    if not hasattr(processor, "with_views") or tuple(processor.views) == views:
        return processor
    return processor.with_views(views)


def default_num_proc() -> int:
    """The cores this process may run on (its CPU affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def _quiet_processor_warnings():
    """Raise the processor module's log level to ERROR meanwhile (hides the "masked N of M invalid molecules"
    warning of ``MMSAProcessor.featurize``).

    Not used by :func:`run_inference` any more (it featurizes molecule by molecule, see
    :func:`_featurize_molecules`, so the processor logs nothing); kept because ``benchmarks/inference.py``
    imports it."""
    from .processing import processing_mmsa

    logger = processing_mmsa.logger
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# ------------------------------------------------------------------------------------------------------------------
# featurization ahead of the model
# ------------------------------------------------------------------------------------------------------------------

#: the key of a placeholder record (``valid=False``) holding why the molecule could not be featurized
_ERROR_KEY = "error"


def _featurize_molecules(processor, molecules: list[str]) -> list[dict[str, Any]]:
    """One record per molecule, ``input_index`` its position in ``molecules``.

    A valid molecule gets ``processor.featurize_one``'s record. An invalid one (``featurize_one`` raised, as
    ``processor.featurize(on_error="mask")`` would mask it) gets ``processor.placeholder_record`` (``valid=False``)
    with the failure text under :data:`_ERROR_KEY` (the exception's message, else its class name), so the reason
    is known without featurizing the molecule again. Nothing is logged.
    """
    records = []
    for index, molecule in enumerate(molecules):
        try:
            records.append(processor.featurize_one(molecule, index))
        except Exception as err:  # noqa: BLE001 - MoleculeError, or any RDKit failure on this molecule
            record = processor.placeholder_record(index)
            record[_ERROR_KEY] = str(err) or type(err).__name__
            records.append(record)
    return records


_WORKER_PROCESSOR = None  # the processor of a featurization worker process (set by _init_featurize_worker)


def _init_featurize_worker(processor) -> None:
    """Initializer of a featurization worker process: keep ``processor``, leave signal handling to the parent."""
    global _WORKER_PROCESSOR
    reset_signals_in_child()  # SIGTERM from Pool.terminate ends a worker; the parent handles SIGINT and cleans up
    _WORKER_PROCESSOR = processor


def _featurize_slice(molecules: list[str]) -> list[dict[str, Any]]:
    """:func:`_featurize_molecules` in a worker process (``input_index`` local to the slice)."""
    return _featurize_molecules(_WORKER_PROCESSOR, molecules)


class _ChunkFeaturizer:
    """Featurizes input chunks ahead of the model, in input order.

    With ``num_proc > 1``, one pool of ``num_proc`` worker processes (fork where available) lives for the whole
    run; each chunk is split into ``2 * num_proc`` slices, and up to ``ahead`` chunks beyond the one the model is
    working on are in flight, so featurization overlaps the model forward and memory stays bounded. With
    ``num_proc == 1`` (or inside a daemonic worker) chunks are featurized in this process, one at a time.
    """

    def __init__(self, processor, num_proc: int, ahead: int = 2):
        import multiprocessing

        self.processor, self.ahead, self.pool = processor, max(0, ahead), None
        self.num_proc = 1 if multiprocessing.current_process().daemon else max(1, num_proc)
        self.wait_seconds = 0.0  # time the caller spent waiting for records

    def __enter__(self) -> _ChunkFeaturizer:
        import multiprocessing

        if self.num_proc > 1:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else None)
            self.pool = context.Pool(self.num_proc, initializer=_init_featurize_worker, initargs=(self.processor,))
        return self

    def __exit__(self, *exc_info) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None

    def records(self, chunks: Iterator[list[str]]) -> Iterator[tuple[list[str], list[dict[str, Any]]]]:
        """``(chunk, records)`` per chunk: one record per molecule (:func:`_featurize_molecules`: a placeholder
        holding the reason for an invalid one), ``input_index`` local to the chunk."""
        pending: collections.deque = collections.deque()
        for chunk in chunks:
            pending.append((chunk, self._submit(chunk)))
            if len(pending) > self.ahead:
                yield self._collect(*pending.popleft())
        while pending:
            yield self._collect(*pending.popleft())

    def _submit(self, chunk: list[str]) -> list[tuple[int, Any]]:
        """``(start, job)`` per slice of ``chunk``: a pool job, or (no pool) the slice itself, featurized later."""
        if self.pool is None:
            return [(0, chunk)]  # featurized when collected
        size = max(1, -(-len(chunk) // (2 * self.num_proc)))
        return [(start, self.pool.apply_async(_featurize_slice, (chunk[start:start + size],)))
                for start in range(0, len(chunk), size)]

    def _collect(self, chunk: list[str], jobs: list[tuple[int, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
        """The records of ``chunk`` from its jobs (waited for, timed), ``input_index`` made local to the chunk."""
        t0 = time.perf_counter()
        records = []
        for start, job in jobs:
            part = _featurize_molecules(self.processor, job) if self.pool is None else job.get()
            for record in part:
                record["input_index"] += start
            records.extend(part)
        self.wait_seconds += time.perf_counter() - t0
        return chunk, records


def run_inference(
    model_id: str | os.PathLike,
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
    model=None,
    processor=None,
) -> dict[str, Any]:
    """Embed (``mode="embed"``) or predict (``mode="predict"``) every molecule of ``input_path``.

    ``model`` / ``processor`` may be given already loaded (then ``model_id`` is only recorded in the report); the
    processor computes only the views the model reads (:func:`processor_for_model`). Returns (and writes as
    ``<output>.report.json``) the report; see the module docstring for the files.
    """
    started = time.perf_counter()
    _check_options(mode, on_error, batch_size, chunk_size)
    output_path = Path(output_path)
    output_kind(output_path)  # fail fast, before loading anything
    input_path = _check_input(input_path)
    smiles_column = resolve_smiles_column(input_path, smiles_column)
    model, processor = _model_and_processor(model_id, mode, revision, model, processor)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).eval()
    run = _InferenceRun(model, processor, mode, per_view, device, batch_size,
                        int(num_proc or default_num_proc()), on_error)
    total = count_rows(input_path, smiles_column)
    settings = {"model": str(model_id), "input": str(input_path), "smiles_column": smiles_column,
                "output": str(output_path), "chunk_size": chunk_size}
    return _write_outputs(run, settings, total, show_progress, started=started)


def _write_outputs(run: _InferenceRun, settings: dict[str, Any], total: int, show_progress: bool,
                   started: float) -> dict[str, Any]:
    """Stream the ``settings["input"]`` rows (``total`` of them) through ``run`` into the output file(s), then
    write the report; every file goes to a temporary name, all committed together once everything succeeded
    (the outputs first, the report last) and removed on any error. ``started``: the run's ``time.perf_counter()``
    at its start (for ``wall_seconds``). Returns the report."""
    input_path, output_path = Path(settings["input"]), Path(settings["output"])
    pending = PendingFiles()
    writer = _open_writer(output_path, _OutputLayout(run.value_columns, total, run.on_error == "skip"), pending)
    try:
        chunks = iter_smiles_chunks(input_path, settings["smiles_column"], settings["chunk_size"])
        rows, files = _stream(run, writer, chunks, total, show_progress, input_path)
        if rows != total:
            raise InferenceInputError(f"read {rows} rows from {input_path} but counted {total} before")
        report = run.report(settings, total, writer.rows_written, time.perf_counter() - started)
        _write_report(report, files, output_path, pending)
        pending.commit()
    except BaseException:
        writer.abort()
        raise
    return report


def _model_and_processor(model_id: str | os.PathLike, mode: str, revision: str | None, model, processor):
    """``(model, processor)`` for :func:`run_inference`: either one loaded from ``model_id`` unless given, the
    processor reduced to the views the model reads (:func:`processor_for_model`)."""
    if model is None or processor is None:
        loaded_model, loaded_processor, _ = load_for_inference(str(model_id), mode, revision)
        model = model if model is not None else loaded_model
        processor = processor if processor is not None else loaded_processor
    return model, processor_for_model(processor, model, mode)


def _write_report(report: dict[str, Any], files: list[str], output_path: Path, pending: PendingFiles) -> None:
    """Set ``report["files"]`` (the outputs ``files`` and the report itself) and write the report to its
    temporary name in ``pending`` (``<output>.report.json`` once committed)."""
    target = report_path(output_path)
    report["files"] = sorted(set(files) | {str(target)})
    try:
        with open(pending.temp_for(target), "w") as handle:
            handle.write(json.dumps(report, indent=2) + "\n")
    except OSError as err:
        raise _named_disk_error(err, target) from None


def _check_options(mode: str, on_error: str, batch_size: int, chunk_size: int) -> None:
    """Raise :class:`InferenceInputError` for an unknown ``mode`` / ``on_error`` or a size below 1."""
    if on_error not in ("mask", "skip", "raise"):
        raise InferenceInputError(f"on_error={on_error!r}: use 'mask', 'skip' or 'raise'")
    if mode not in ("embed", "predict"):
        raise InferenceInputError(f"mode={mode!r}: use 'embed' or 'predict'")
    if batch_size < 1 or chunk_size < 1:
        raise InferenceInputError(f"batch_size and chunk_size must be >= 1 (got {batch_size}, {chunk_size})")


def _stream(run: _InferenceRun, writer: _OutputWriter, chunks: Iterator[list[str]], total: int, show_progress: bool,
            input_path: Path) -> tuple[int, list[str]]:
    """Featurize, run and write every chunk, then close the writer (its temporary files complete); returns the
    number of input rows read and the final names of the files written. The caller commits or aborts."""
    from tqdm.auto import tqdm

    offset = 0
    progress = tqdm(total=total, desc=f"mmsa {run.mode}", unit="mol", disable=not show_progress, dynamic_ncols=True)
    try:
        with _ChunkFeaturizer(run.processor, run.num_proc) as featurizer:
            for chunk, records in featurizer.records(chunks):
                raise_if_interrupted()
                run.timings["featurize"] = featurizer.wait_seconds
                run.process_chunk(chunk, records, offset, writer, input_path)
                offset += len(chunk)
                progress.update(len(chunk))
                raise_if_interrupted()
                if run.bad_rows:
                    progress.set_postfix(bad=len(run.bad_rows), refresh=False)
        files = writer.close()
    finally:
        progress.close()
    return offset, files


class _InferenceRun:
    """The per-chunk work of :func:`run_inference` after featurization (:class:`_ChunkFeaturizer`): run the model
    in batches, write; keeps the bad rows and the stage timings for the report (``featurize`` is the time spent
    waiting for records, i.e. the featurization not overlapped by the model)."""

    def __init__(self, model, processor, mode: str, per_view: bool, device, batch_size: int, num_proc: int,
                 on_error: str):
        self.model, self.processor, self.mode, self.device = model, processor, mode, device
        self.batch_size, self.num_proc, self.on_error = batch_size, num_proc, on_error
        config = model.config
        self.views = model.enabled_views() if (mode == "embed" and per_view) else []
        self.names: list[str] | None = None
        if mode == "embed":
            self.columns = {"embedding": int(config.hidden_size)}
            self.columns.update({f"{view}_embedding": int(config.hidden_size) for view in self.views})
        else:
            self.names = prediction_columns(config)
            self.columns = {"prediction": len(self.names)}
        self.value_columns = _value_columns(self.columns, self.names)
        self.bad_rows: list[dict[str, Any]] = []
        self.timings = {"featurize": 0.0, "collate": 0.0, "model": 0.0, "write": 0.0}

    def process_chunk(self, chunk: list[str], records: list[dict], offset: int, writer: _OutputWriter,
                      input_path: Path) -> None:
        """Record the bad rows of ``chunk`` (input rows ``offset...``, featurized into ``records``, one per
        molecule), run the model on the valid ones, write the rows."""
        valid = np.fromiter((bool(r["valid"]) for r in records), bool, len(records))
        self._record_bad_rows(chunk, records, offset, valid, input_path)
        values = {name: np.full((len(chunk), width), np.nan, np.float32) for name, width in self.columns.items()}
        good = [r for r in records if r["valid"]]
        good_rows = np.flatnonzero(valid)
        for start in range(0, len(good), self.batch_size):
            self._run_batch(good[start:start + self.batch_size], good_rows[start:start + self.batch_size], values)
        t0 = time.perf_counter()
        keep = valid if self.on_error == "skip" else np.ones(len(chunk), bool)
        writer.write(_OutputRows(
            values={k: v[keep] for k, v in values.items()},
            input_index=np.arange(offset, offset + len(chunk), dtype=np.int64)[keep],
            smiles=[s for s, k in zip(chunk, keep) if k],
            canonical_smiles=[r["smiles"] for r, k in zip(records, keep) if k],
            valid=valid[keep],
        ))
        self.timings["write"] += time.perf_counter() - t0

    def _record_bad_rows(self, chunk: list[str], records: list[dict], offset: int, valid: np.ndarray,
                         input_path: Path) -> None:
        """Add the invalid molecules of ``chunk`` to ``bad_rows`` with the reason kept in their placeholder
        record; under ``raise``, raise :class:`InferenceInputError` for the first one instead."""
        for local in np.flatnonzero(~valid):
            index = offset + int(local)
            reason = records[local][_ERROR_KEY]
            if self.on_error == "raise":
                raise InferenceInputError(
                    f"{input_path}: invalid molecule at row {index} ({chunk[local]!r}): {reason}. "
                    "Pass --on-error mask or --on-error skip to continue past invalid molecules."
                )
            self.bad_rows.append({"input_index": index, "smiles": chunk[local], "error": reason})

    def _run_batch(self, records: list[dict], rows: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """Collate ``records`` and write the model outputs into ``values[name][rows]`` (float32 ``[n, width]``)."""
        t0 = time.perf_counter()
        batch = self.processor.collate(records)
        inputs = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        t1 = time.perf_counter()
        self.timings["collate"] += t1 - t0
        with torch.inference_mode():
            outputs = self.model(**inputs)
            if self.mode == "predict":
                values["prediction"][rows] = self.model.predict_from_logits(outputs.logits).float().cpu().numpy()
            else:
                values["embedding"][rows] = outputs.unified_embedding.float().cpu().numpy()
                for view in self.views:
                    # a view no molecule of the batch has is a zero token (as for a single absent row)
                    z = outputs.view_embeddings.get(view)
                    values[f"{view}_embedding"][rows] = 0.0 if z is None else z.float().cpu().numpy()
        self.timings["model"] += time.perf_counter() - t1

    def report(self, settings: dict[str, Any], total: int, rows_written: int, wall: float) -> dict[str, Any]:
        """The ``<output>.report.json`` content (``files`` is set by the caller)."""
        bad_indices = [row["input_index"] for row in self.bad_rows]
        timings = self.timings
        return {
            **{k: settings[k] for k in ("model", "input", "smiles_column", "output")},
            "mode": self.mode, "rows": total, "rows_written": rows_written,
            "valid_rows": total - len(self.bad_rows), "on_error": self.on_error, "bad_rows": len(self.bad_rows),
            "masked_indices": bad_indices if self.on_error == "mask" else [],
            "skipped_indices": bad_indices if self.on_error == "skip" else [],
            "bad_row_details": self.bad_rows,
            "columns": list(self.columns) if self.mode == "embed" else self.names,
            "width": int(next(iter(self.columns.values()))),
            "views": list(getattr(self.processor, "views", ("graph", "image", "geometry"))),
            "chunk_size": settings["chunk_size"], "batch_size": self.batch_size, "num_proc": self.num_proc,
            "device": str(self.device), "torch_num_threads": torch.get_num_threads(),
            **{f"{stage}_seconds": seconds for stage, seconds in timings.items()},
            "wall_seconds": wall,
            "molecules_per_s": total / max(wall, 1e-9),
            "featurize_molecules_per_s": total / max(timings["featurize"], 1e-9),
            "model_molecules_per_s": (total - len(self.bad_rows)) / max(timings["model"], 1e-9),
            "files": [],
        }


__all__ = [
    "InferenceInputError",
    "run_inference",
    "load_for_inference",
    "iter_smiles_chunks",
    "count_rows",
    "prediction_columns",
    "output_kind",
    "processor_for_model",
    "report_path",
    "sidecar_path",
]
