"""Small filesystem primitives the store relies on for crash and concurrency safety."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

# What the filesystem says when the store's disk, not the command, is at fault.
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG})


class StoreWriteError(OSError):
    """The store's filesystem refused a write (full, over quota, read-only, I/O error).

    Raised in place of the OSError, with one line that names what was being written and where.
    Writes are atomic (temporary file, then rename) and a chunk counts only once its marker is
    written, so nothing half-written is visible and everything committed before stays readable.
    """


@contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Turn the filesystem's refusals while writing ``what`` into a ``StoreWriteError`` naming it."""
    try:
        yield
    except StoreWriteError:
        raise
    except OSError as error:
        if error.errno not in _STORAGE_ERRNOS:
            raise
        raised = StoreWriteError(f"cannot write {what}: {os.strerror(error.errno)}. Work committed before is "
                                 "kept and readable: free space (or fix the disk) and run the same command again "
                                 "to resume")
        raised.errno = error.errno
        raise raised from None


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so readers see either nothing or the whole file (rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class DamagedFileError(ValueError):
    """A store file that cannot be read back (truncated, overwritten, not written by us)."""


def read_json(path: Path) -> Any:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DamagedFileError(f"damaged store file {path}: not valid JSON ({error}); delete it and rerun "
                               "the command that wrote it") from None


class FileLock:
    """An exclusive advisory lock (flock) on one file.

    The kernel drops a flock when its process dies, kill -9 included, so a crashed writer
    never leaves a stale lock behind and nobody has to guess whether a pid is alive.
    """

    def __init__(self, path: Path, what: str = "") -> None:
        self.path = path
        self.what = what or f"lock file {path}"  # what errors call it
        self._fd: int | None = None

    def acquire(self, blocking: bool = False) -> bool:
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            with storage_errors(self.what):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.uname().nodename} {os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)  # drops the flock: a lock we could not label is not held
            raise
        self._fd = fd
        return True

    def holder(self) -> str:
        """Who holds it, as written by the holder (host and pid); '' when unknown."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FileLock":
        self.acquire(blocking=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
