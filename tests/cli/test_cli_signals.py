"""``mmsa embed`` killed mid-run, on a full disk, and run twice at once: never a half-written file.

Real subprocesses, real signals and a real (tiny) filesystem; nothing is mocked.
"""

from __future__ import annotations

import csv
import errno
import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mmsa_hf.atomic import PARTIAL_MARKER
from mmsa_hf.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
BBBP = REPO_ROOT / "mmsa_hf" / "data" / "moleculenet" / "bbbp.csv.gz"


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_XET="1")
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _embed_command(model: Path, input_path: Path, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mmsa_hf.cli", "embed", "--model", str(model), "--input", str(input_path),
            "--output", str(output), "--no-progress", "--chunk-size", "16", "--batch-size", "16", *extra]


def _partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if PARTIAL_MARKER in p.name)


def _stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory) -> Path:
    """24,000 rows (1,200 BBBP molecules, 20 times): a run that cannot finish in the second before the signal.

    With 1,200 rows a quiet CI box finished the CSV run before the signal arrived (rc 0); the run is killed
    early, so the length costs nothing.
    """
    path = tmp_path_factory.mktemp("big") / "big.csv"
    with gzip.open(BBBP, "rt", newline="") as handle:
        smiles = [row["smiles"] for _, row in zip(range(1200), csv.DictReader(handle))]
    path.write_text("smiles\n" + "\n".join(smiles * 20) + "\n")
    return path


def _wait_for_partial(process: subprocess.Popen, folder: Path, timeout: float = 300.0) -> None:
    """Until the run has started writing (a temporary file exists) and has had a moment to write rows."""
    deadline = time.monotonic() + timeout
    while not _partials(folder):
        if process.poll() is not None:
            pytest.fail(f"mmsa embed ended (rc {process.returncode}) before writing: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("mmsa embed wrote nothing within the timeout")
        time.sleep(0.05)
    time.sleep(1.0)


@pytest.mark.parametrize(
    "suffix, signum, earlier, num_proc",
    [(".parquet", signal.SIGTERM, True, "1"), (".npy", signal.SIGTERM, False, "1"),
     (".csv", signal.SIGINT, True, "1"), (".npy", signal.SIGINT, True, "2")],
    ids=["parquet-sigterm-earlier", "npy-sigterm", "csv-sigint-earlier", "npy-sigint-earlier-pool"],
)
def test_killed_run_leaves_no_partial_file(tmp_path, pretrain_dir, inputs, big_csv, suffix, signum, earlier,
                                           num_proc, capsys):
    output = tmp_path / f"emb{suffix}"
    report = output.with_name(output.name + ".report.json")
    if earlier:  # a good file from an earlier run, which the killed run must not touch
        assert main(["embed", "--model", pretrain_dir, "--input", inputs["csv"], "--output", output,
                     "--no-progress", "--num-proc", "1"]) == 0
        capsys.readouterr()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    process = subprocess.Popen(_embed_command(pretrain_dir, big_csv, output, "--num-proc", num_proc),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    _wait_for_partial(process, tmp_path)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 128 + signum
    lines = _stderr_lines(stderr)
    name = signal.Signals(signum).name
    assert lines == [f"mmsa embed: interrupted by {name}; nothing was written to {output} "
                     "(an earlier file there is untouched)"], stderr
    assert _partials(tmp_path) == []
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # no new file; an earlier output and its report byte-identical
    assert output.exists() == earlier and report.exists() == earlier


def _mount_tiny_tmpfs(folder: Path) -> bool:
    if os.geteuid() != 0:
        return False
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


def _fill(folder: Path) -> None:
    """Fill the filesystem of ``folder`` to the last byte."""
    with open(folder / "filler", "wb", buffering=0) as handle:  # unbuffered: nothing left to flush at close
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC, err


@pytest.mark.parametrize("suffix", [".npy", ".parquet", ".csv"])
def test_full_filesystem_gives_a_clean_error(tmp_path, pretrain_dir, inputs, suffix, capsys):
    """A 64 KB tmpfs, mounted for the test (CI runs as root), holding an earlier output, then filled up."""
    disk = tmp_path / "disk"
    if not _mount_tiny_tmpfs(disk):
        pytest.skip("cannot mount a tmpfs here (not root); test_file_size_limit_gives_a_clean_error covers it")
    try:
        output = disk / f"emb{suffix}"
        assert main(["embed", "--model", pretrain_dir, "--input", inputs["csv"], "--output", output,
                     "--no-progress", "--num-proc", "1"]) == 0
        capsys.readouterr()
        before = {p.name: p.read_bytes() for p in disk.iterdir()}
        _fill(disk)
        code = main(["embed", "--model", pretrain_dir, "--input", inputs["csv"], "--output", output,
                     "--no-progress", "--num-proc", "1", "--per-view"])
        err = capsys.readouterr().err
        assert code == 2 and "No space left on device" in err and str(disk) in err, err
        assert _partials(disk) == []
        assert {p.name: p.read_bytes() for p in disk.iterdir() if p.name != "filler"} == before
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_file_size_limit_gives_a_clean_error(tmp_path, pretrain_dir, inputs):
    """Without root: RLIMIT_FSIZE in the subprocess (writes past it fail with EFBIG, "File too large")."""
    output = tmp_path / "emb.npy"

    def limit():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))  # the 26 x 32 float32 rows need 3.4 KB

    done = subprocess.run(_embed_command(pretrain_dir, inputs["csv"], output, "--num-proc", "1"),
                          capture_output=True, text=True, env=_env(), preexec_fn=limit, timeout=300)
    assert done.returncode == 2 and "File too large" in done.stderr and str(output) in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_concurrent_runs(tmp_path, pretrain_dir, inputs, capsys):
    """Two runs to the same output and one to another, at once: each file is whole and equals a single run's."""
    reference = tmp_path / "reference.npy"
    assert main(["embed", "--model", pretrain_dir, "--input", inputs["csv"], "--output", reference,
                 "--no-progress", "--num-proc", "1"]) == 0
    capsys.readouterr()
    targets = [tmp_path / "same.parquet", tmp_path / "same.parquet", tmp_path / "other.npy"]
    processes = [subprocess.Popen(_embed_command(pretrain_dir, inputs["csv"], target, "--num-proc", "1"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
                 for target in targets]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
    expected = np.load(reference)
    same = np.stack(pq.read_table(tmp_path / "same.parquet").column("embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(same, expected, rtol=1e-5, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(np.load(tmp_path / "other.npy"), expected, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert _partials(tmp_path) == []
