"""mmsa_hf.atomic and the writers built on it: never a half-written file, an earlier file kept on failure.

Real files and real signals only (no filesystem mocks)."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest

from mmsa_hf.atomic import (
    PARTIAL_MARKER,
    Interrupted,
    PendingFiles,
    atomic_directory,
    atomic_open,
    atomic_path,
    preallocate,
    signals_as_exceptions,
    write_text_atomic,
)
from mmsa_hf.training.common import JsonlLog, plot_curves, write_json


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if PARTIAL_MARKER in p.name or ".old-" in p.name)


def test_write_text_atomic_replaces_whole(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "first\n")
    write_text_atomic(target, "second\n")
    assert target.read_text() == "second\n" and _leftovers(tmp_path) == []


def test_an_error_keeps_the_earlier_file_byte_identical(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"earlier good content")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(target, "wb") as handle:
            handle.write(b"half of the new cont")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"earlier good content" and _leftovers(tmp_path) == []


def test_an_error_leaves_no_file_when_there_was_none(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "new.png") as temp:
            temp.write_bytes(b"\x89PNG partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_pending_files_commit_together_or_not_at_all(tmp_path):
    pending = PendingFiles()
    for name in ("a.npy", "b.npy"):
        pending.temp_for(tmp_path / name).write_text(name)
    assert not (tmp_path / "a.npy").exists()  # nothing under a final name before the commit
    pending.commit()
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["a.npy", "b.npy"]
    pending = PendingFiles()
    pending.temp_for(tmp_path / "a.npy").write_text("new")
    pending.discard()
    assert (tmp_path / "a.npy").read_text() == "a.npy" and _leftovers(tmp_path) == []


def test_atomic_directory_swaps_whole_or_keeps_the_earlier_one(tmp_path):
    target = tmp_path / "best"
    with atomic_directory(target) as staging:
        (staging / "model.safetensors").write_bytes(b"v1")
    with pytest.raises(OSError):
        with atomic_directory(target) as staging:
            (staging / "model.safetensors").write_bytes(b"v2 half")
            raise OSError("disk full")
    assert (target / "model.safetensors").read_bytes() == b"v1" and _leftovers(tmp_path) == []
    with atomic_directory(target) as staging:
        (staging / "config.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["config.json"] and _leftovers(tmp_path) == []


def test_write_json_is_atomic(tmp_path):
    target = tmp_path / "results.json"
    write_json(target, {"auc": 0.9})
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_json(target, {"auc": object()})
    assert json.loads(target.read_text()) == {"auc": 0.9} and _leftovers(tmp_path) == []


def test_jsonl_truncate_and_plot_are_atomic(tmp_path):
    log = JsonlLog(tmp_path / "log.jsonl")
    for step in range(1, 5):
        log.write({"step": step, "loss": 1.0 / step})
    log.truncate_after(2)
    assert [r["step"] for r in log.read()] == [1, 2]
    plot_curves(log.read(), ["loss"], tmp_path / "curves.png", title="t")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and _leftovers(tmp_path) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_become_interrupted_and_handlers_are_restored(tmp_path, signum):
    before = signal.getsignal(signum)
    target = tmp_path / "out.txt"
    target.write_text("earlier")
    with pytest.raises(Interrupted) as caught:
        with signals_as_exceptions():
            with atomic_open(target) as handle:
                handle.write("new, never complete")
                os.kill(os.getpid(), signum)
                for _ in range(100):  # the handler runs between bytecodes, in the main thread
                    time.sleep(0.01)
    assert caught.value.signum == signum and caught.value.exit_code == 128 + signum
    assert target.read_text() == "earlier" and _leftovers(tmp_path) == []
    assert signal.getsignal(signum) == before


def test_preallocate_names_the_file_on_a_limit(tmp_path):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # Python ignores it already; be explicit
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with open(tmp_path / "big.npy", "wb") as handle, pytest.raises(OSError, match="bytes needed") as caught:
            preallocate(handle, 1 << 20, tmp_path / "emb.npy")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert caught.value.filename == str(tmp_path / "emb.npy")


def test_npy_header_rewrite_for_fewer_rows(tmp_path):
    from mmsa_hf.inference import _NpyFile

    target = tmp_path / "x.npy"
    npy = _NpyFile(tmp_path / "x.tmp", target, rows=100_000, width=3, dtype=np.float32)
    npy.append(np.arange(6, dtype=np.float32).reshape(2, 3))
    npy.finish(2)
    array = np.load(tmp_path / "x.tmp")
    assert array.shape == (2, 3) and array.dtype == np.float32 and array.ravel().tolist() == list(range(6))
    indices = _NpyFile(tmp_path / "i.tmp", target, rows=5, width=None, dtype=np.int64)
    indices.append(np.array([0, 4]))
    indices.finish(2)
    assert np.load(tmp_path / "i.tmp").tolist() == [0, 4]


def test_an_interrupt_swallowed_in_a_finalizer_is_raised_again(capsys):
    """A signal landing in a ``__del__`` raises there, and Python drops that exception: the next safe point of the
    loop raises it again, and no "Exception ignored" noise reaches stderr."""
    import signal
    import time

    from mmsa_hf.atomic import Interrupted, raise_if_interrupted, signals_as_exceptions

    class SignalledWhileCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here, inside __del__

    with pytest.raises(Interrupted) as caught:
        with signals_as_exceptions():
            SignalledWhileCollected()  # garbage at once
            raise_if_interrupted()
    assert caught.value.signum == signal.SIGINT and caught.value.exit_code == 130
    assert "Exception ignored" not in capsys.readouterr().err
    raise_if_interrupted()  # outside the block nothing is pending


RDKIT_SIGINT_SCRIPT = """
import os, signal, threading, time
from rdkit import Chem
from rdkit.Chem import rdDistGeom
from mmsa_hf.atomic import Interrupted, signals_as_exceptions

molecule = Chem.AddHs(Chem.MolFromSmiles("CC(C)C[C@H](NC(=O)[C@@H](Cc1ccccc1)NC(=O)c1cnccn1)B(O)O"))
embedded = 0
try:
    with signals_as_exceptions():
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rdDistGeom.EmbedMolecule(molecule, randomSeed=embedded)
            embedded += 1
    print("not interrupted", embedded)
except Interrupted as err:
    print("interrupted", err.signum, embedded)
"""


def test_sigint_during_rdkit_conformer_generation_interrupts_the_run():
    """RDKit takes SIGINT for itself while it embeds a conformer (it only cancels that molecule); inside
    signals_as_exceptions the signal still reaches Python and stops the loop. A fresh process, as the CLI is:
    the SIGINT block covers the threads started after the block is entered."""
    import signal
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", RDKIT_SIGINT_SCRIPT], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    words = done.stdout.split()
    assert words[:2] == ["interrupted", str(int(signal.SIGINT))], done.stdout + done.stderr
    assert int(words[2]) < 1000  # stopped at once, not after the 60 s loop
