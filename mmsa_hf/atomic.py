"""Never a half-written file: atomic outputs, signals turned into clean exits, real preallocation.

Every user-facing result the package writes (``mmsa embed`` / ``mmsa predict`` outputs and reports, fine-tuning
results, plots, ``save_pretrained`` folders of the scripts) goes through this module:

* :class:`PendingFiles` / :func:`atomic_path` / :func:`atomic_open` / :func:`write_text_atomic` — the data is
  written to a temporary name in the target's directory (``.<name>.partial-<pid>-<random>``), flushed and
  fsynced, then renamed over the target with ``os.replace`` (atomic on POSIX) only on success, and the directory
  is fsynced. On any exception (and on SIGINT / SIGTERM turned into :class:`Interrupted`) the temporary file is
  removed and an earlier file at the target is left byte-identical. Two writers of the same target never
  interleave: each has its own temporary name and the last one to finish wins whole.
* :func:`atomic_directory` — the same for a folder (``save_pretrained``): written under a temporary name, swapped
  in when complete.
* :func:`signals_as_exceptions` — SIGINT / SIGTERM / SIGHUP raise :class:`Interrupted` in the main thread, so
  the cleanup above runs; the CLI prints one line and exits with ``128 + signal number``.
* :func:`preallocate` — ``os.posix_fallocate`` (real blocks, not a sparse file): a full disk is a clean
  ``OSError`` ``No space left on device`` up front, never a SIGBUS from a memory map.

A process killed with SIGKILL (or the power going) can leave a ``.<name>.partial-*`` file next to the target,
but never a partial file under the target's name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import IO, Iterator

__all__ = [
    "Interrupted",
    "PendingFiles",
    "atomic_path",
    "atomic_open",
    "atomic_directory",
    "write_text_atomic",
    "write_bytes_atomic",
    "signals_as_exceptions",
    "raise_if_interrupted",
    "preallocate",
    "fsync_path",
    "PARTIAL_MARKER",
]

#: part of every temporary name (``.<name>.partial-<pid>-<random>``)
PARTIAL_MARKER = ".partial-"
_HANDLED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by :func:`signals_as_exceptions` when a handled signal arrives.

    A ``KeyboardInterrupt`` (not an ``Exception``), so ``except Exception`` blocks do not swallow it while the
    cleanup of ``finally`` / ``except BaseException`` blocks runs. ``exit_code`` is ``128 + signum``, what a
    shell reports for a process killed by that signal.
    """

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + self.signum
        super().__init__(f"interrupted by {self.signal_name}")


# ------------------------------------------------------------------------------------------------------------------
# fsync helpers
# ------------------------------------------------------------------------------------------------------------------


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a directory's) data to the disk."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else os.O_RDONLY
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as err:  # some filesystems refuse fsync on a directory
        if err.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def temporary_name(target: str | os.PathLike) -> Path:
    """A fresh temporary path next to ``target``: ``.<name>.partial-<pid>-<random>``."""
    target = Path(target)
    return target.with_name(f".{target.name}{PARTIAL_MARKER}{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Block SIGINT / SIGTERM / SIGHUP while the body runs (a commit of several renames is not cut in half);
    a signal that arrives meanwhile is delivered when the block ends."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# ------------------------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------------------------


class PendingFiles:
    """Temporary files that are renamed over their targets together by :meth:`commit`, or removed by
    :meth:`discard`.

    ``temp_for(target)`` hands out the temporary path (in the target's directory, so the rename never crosses a
    filesystem); the caller writes it. ``commit`` fsyncs every temporary file, renames them in the order they
    were registered (signals blocked meanwhile) and fsyncs the directories. ``discard`` is idempotent.
    """

    def __init__(self) -> None:
        self._pairs: list[tuple[Path, Path]] = []

    def temp_for(self, target: str | os.PathLike) -> Path:
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = temporary_name(target)
        self._pairs.append((temp, target))
        return temp

    @property
    def targets(self) -> list[Path]:
        return [target for _, target in self._pairs]

    def commit(self) -> list[Path]:
        """Rename every temporary file over its target; returns the targets."""
        for temp, _ in self._pairs:
            fsync_path(temp)
        with signals_deferred():
            for temp, target in self._pairs:
                os.replace(temp, target)
            committed, self._pairs = [target for _, target in self._pairs], []
        for directory in {target.parent for target in committed}:
            fsync_path(directory)
        return committed

    def discard(self) -> None:
        """Remove every temporary file (after an error); the targets are not touched."""
        pairs, self._pairs = self._pairs, []
        for temp, _ in pairs:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target``, on any error it is removed.

    For writers that take a file name (``fig.savefig(path, format=...)``, ``pq.write_table``)."""
    pending = PendingFiles()
    temp = pending.temp_for(target)
    try:
        yield temp
        if not temp.exists():
            raise FileNotFoundError(f"nothing was written for {target}")
        pending.commit()
    except BaseException:
        pending.discard()
        raise


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """``open(target, mode)`` that only replaces ``target`` once the block has finished without error."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open: mode {mode!r} must be a write mode ('w', 'wb', 'w+'...)")
    with atomic_path(target) as temp:
        with open(temp, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def write_text_atomic(target: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """``Path(target).write_text(text)``, atomically."""
    with atomic_open(target, "w", encoding=encoding) as handle:
        handle.write(text)


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
    """``Path(target).write_bytes(data)``, atomically."""
    with atomic_open(target, "wb") as handle:
        handle.write(data)


# ------------------------------------------------------------------------------------------------------------------
# folders
# ------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``target``; when the block succeeds, every file in it is fsynced
    and the folder takes ``target``'s name (an earlier ``target`` folder is moved aside and then deleted). On
    any error the temporary folder is deleted and an earlier ``target`` is untouched.

    The swap is two renames: for an instant ``target`` does not exist, but it is never half-written.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_name(target)
    temp.mkdir()
    try:
        yield temp
        for path in sorted(temp.rglob("*")):
            if path.is_file():
                fsync_path(path)
        _swap_directory(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _swap_directory(temp: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
    with signals_deferred():
        had_old = target.exists()
        if had_old:
            os.replace(target, old)
        os.replace(temp, target)
    fsync_path(target.parent)
    if had_old:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------------------
# signals
# ------------------------------------------------------------------------------------------------------------------


#: the signals received inside :func:`signals_as_exceptions` (the first one counts)
_RECEIVED: list[int] = []


class _SigintWatcher:
    """Receives SIGINT in a dedicated thread (``sigwait``) and hands it to the main thread's Python handler
    (``_thread.interrupt_main``).

    Why: RDKit swaps in its own C-level SIGINT handler while it embeds a conformer or optimises it, and a Ctrl-C
    landing then only cancels that molecule's embedding (``EmbedMolecule`` returns -1); Python never sees it and the
    run carries on. With SIGINT blocked in the main thread (and so in every thread started later) and waited for
    here, no library handler can take it; the main thread raises as soon as the current RDKit call returns.
    Threads that already existed when the block was entered keep SIGINT unblocked (Python cannot change another
    thread's mask), so the ``mmsa`` commands enter it before any work starts threads.
    """

    WAKE = signal.SIGUSR2  # sent by stop() to end the wait

    def start(self) -> "_SigintWatcher":
        self.stopping = False
        self.old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, self.WAKE})
        self.thread = threading.Thread(target=self._wait, name="mmsa-sigint", daemon=True)
        self.thread.start()
        return self

    def _wait(self) -> None:
        import _thread

        while True:
            signum = signal.sigwait({signal.SIGINT, self.WAKE})
            if self.stopping:
                return
            if signum == signal.SIGINT:
                _thread.interrupt_main(signal.SIGINT)

    def stop(self) -> None:
        self.stopping = True
        signal.pthread_kill(self.thread.ident, self.WAKE)
        self.thread.join()
        signal.pthread_sigmask(signal.SIG_SETMASK, self.old_mask)


def _can_watch_sigint(signums) -> bool:
    return (signal.SIGINT in signums and all(hasattr(signal, n) for n in ("pthread_sigmask", "sigwait", "pthread_kill"))
            and hasattr(signal, "SIGUSR2"))


@contextlib.contextmanager
def signals_as_exceptions(signums: tuple[int, ...] = _HANDLED_SIGNALS) -> Iterator[None]:
    """While the body runs, the first SIGINT / SIGTERM / SIGHUP raises :class:`Interrupted` in the main thread
    (so ``finally`` blocks remove temporary files); later ones are ignored, so that the cleanup itself is not
    cut short. Outside the main thread (where handlers cannot be set) this does nothing.

    SIGINT goes through :class:`_SigintWatcher` (RDKit would otherwise take it during conformer generation).
    Python drops an exception raised while a ``__del__`` method or a garbage-collector callback runs (a signal can
    land there at any time): such an :class:`Interrupted` is silenced (``sys.unraisablehook``) and long loops
    re-raise it at their next :func:`raise_if_interrupted`, so a run never carries on as if no signal came.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        if _RECEIVED:
            return
        _RECEIVED.append(signum)
        raise Interrupted(signum)

    def unraisable_hook(unraisable):
        if not isinstance(unraisable.exc_value, Interrupted):
            previous_hook(unraisable)

    _RECEIVED.clear()
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable_hook
    watcher = _SigintWatcher().start() if _can_watch_sigint(signums) else None
    try:
        yield
    finally:
        if watcher is not None:
            watcher.stop()
        for signum, old in previous.items():
            signal.signal(signum, old)
        sys.unraisablehook = previous_hook
        _RECEIVED.clear()


def raise_if_interrupted() -> None:
    """Raise :class:`Interrupted` if a handled signal arrived: a safe point of a long loop, for the case where the
    handler's exception was swallowed (see :func:`signals_as_exceptions`)."""
    if _RECEIVED:
        raise Interrupted(_RECEIVED[0])


def reset_signals_in_child() -> None:
    """For worker processes forked inside :func:`signals_as_exceptions`: SIGTERM kills them again (the parent's
    ``Pool.terminate`` relies on it) and SIGINT is left to the parent, which cleans up."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # a fork inherits the parent's SIGINT block (see _SigintWatcher)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED_SIGNALS)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_DFL)


# ------------------------------------------------------------------------------------------------------------------
# disk space
# ------------------------------------------------------------------------------------------------------------------


def preallocate(handle: IO, size: int, target: str | os.PathLike) -> None:
    """Reserve ``size`` bytes for the open file ``handle`` with ``os.posix_fallocate`` (real blocks, so a full
    disk fails here, with ``ENOSPC`` naming ``target``, instead of later). Filesystems that cannot preallocate
    are left alone: the sequential writes that follow still fail cleanly when the disk fills."""
    if size <= 0 or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(handle.fileno(), 0, size)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise OSError(err.errno, f"{os.strerror(err.errno)} ({size:,} bytes needed)", str(target)) from None
        if err.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS):
            raise
