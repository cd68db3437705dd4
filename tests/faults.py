"""A test-only fault layer around the file operations of the index writer (no production code changes).

While active it counts every operation that changes files under ``root`` -- open for writing, write,
fsync, rename, mkdir, unlink, rmtree, lock creation -- and can, at the N-th one:

- ``crash``: stop the writer there (raise :class:`SimulatedCrash`, which no ``except Exception`` catches);
  then :meth:`FaultyFS.power_loss` rolls back everything not yet durable, as a power cut would: file data
  written since the file's last fsync, and directory entries (creations, renames, removals) made since
  their directory's last fsync;
- ``error``: raise ``OSError(errno)`` there (ENOSPC, EIO), the operation not done.

The model is the usual POSIX one: data is durable after fsync of the file, a name after fsync of its
directory. A process crash without power loss keeps everything (no rollback).
"""

from __future__ import annotations

import builtins
import errno as errno_codes
import io
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

__all__ = ["SimulatedCrash", "FaultyFS", "dead_pid"]


class SimulatedCrash(BaseException):
    """The process 'died' here (BaseException: cleanup code that catches Exception does not run)."""


def dead_pid() -> int:
    """The pid of a process that has exited (for a crashed writer's lock file)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


class _File(io.RawIOBase):
    """A writable file whose write() is an operation point."""

    def __init__(self, fs: FaultyFS, path: Path, raw):
        super().__init__()
        self._fs, self._path, self._raw = fs, path, raw

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._fs._point("write", self._path)
        self._fs._data_changed(self._path)
        return self._raw.write(data)

    def flush(self) -> None:
        if not self._raw.closed:
            self._raw.flush()

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._raw.close()

    def seek(self, *args):  # numpy may ask where it is
        return self._raw.seek(*args)

    def tell(self) -> int:
        return self._raw.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False


class FaultyFS:
    def __init__(self, root: Path, mode: str | None = None, at: int | None = None,
                 error: int = errno_codes.ENOSPC):
        self.root = Path(root).resolve()
        self.mode, self.at, self.error = mode, at, error
        self.points = 0
        self.log: list[tuple[str, str]] = []
        self._journal: list[tuple] = []  # undo records of what is not yet durable, oldest first
        self._fd_paths: dict[int, Path] = {}
        self._backups = self.root.parent / f".{self.root.name}.faultfs-backups"

    # ------------------------------------------------------------------ bookkeeping
    def _mine(self, path) -> bool:
        try:
            return Path(path).resolve().is_relative_to(self.root)
        except (TypeError, ValueError):
            return False

    def _point(self, what: str, path: Path) -> None:
        self.points += 1
        self.log.append((what, str(path)))
        if self.at == self.points:
            if self.mode == "crash":
                raise SimulatedCrash(f"crash at point {self.points}: {what} {path}")
            if self.mode == "error":
                raise OSError(self.error, os.strerror(self.error), str(path))

    def _backup(self, path: Path) -> Path | None:
        if not path.exists():
            return None
        self._backups.mkdir(exist_ok=True)
        target = self._backups / f"{len(self._journal)}-{path.name}"
        if path.is_dir():
            shutil.copytree(path, target)
        else:
            shutil.copy2(path, target)
        return target

    def _data_changed(self, path: Path) -> None:
        # the first change since the file's last fsync records what a power cut would bring back
        if not any(r[0] == "data" and r[1] == path for r in self._journal):
            self._journal.append(("data", path, self._backup(path)))

    def _synced(self, path: Path) -> None:
        if path.is_dir():  # its entries are durable now
            self._journal = [r for r in self._journal if not (r[0] != "data" and Path(r[1]).parent == path)]
        else:
            self._journal = [r for r in self._journal if not (r[0] == "data" and r[1] == path)]

    # ------------------------------------------------------------------ the patched operations
    def _open(self, real_open):
        def patched(file, mode="r", *args, **kwargs):
            if isinstance(file, int) or not self._mine(file) or not any(c in mode for c in "wax+"):
                return real_open(file, mode, *args, **kwargs)
            path = Path(file).resolve()
            self._point("open", path)
            if not path.exists():
                self._journal.append(("create", path))
            self._data_changed(path)
            raw = real_open(file, mode, *args, **kwargs)
            self._fd_paths[raw.fileno()] = path
            if "b" not in mode:
                return raw  # text mode: only the lock file, written once
            return _File(self, path, raw)
        return patched

    @contextmanager
    def active(self):
        real = {"open": builtins.open, "io_open": io.open, "fsync": os.fsync, "replace": os.replace,
                "os_open": os.open, "mkdir": os.mkdir, "unlink": os.unlink, "rmtree": shutil.rmtree}

        def fsync(fd):
            path = self._fd_paths.get(fd)
            if path is None:
                return real["fsync"](fd)
            self._point("fsync", path)
            real["fsync"](fd)
            self._synced(path)

        def replace(src, dst, *a, **kw):
            if not self._mine(dst):
                return real["replace"](src, dst, *a, **kw)
            src, dst = Path(src).resolve(), Path(dst).resolve()
            self._point("rename", dst)
            self._journal.append(("rename", dst, src, self._backup(dst)))
            return real["replace"](src, dst, *a, **kw)

        def os_open(path, flags, *a, **kw):
            if not self._mine(path):
                return real["os_open"](path, flags, *a, **kw)
            p = Path(path).resolve()
            if flags & os.O_CREAT:
                self._point("create", p)
                existed = p.exists()
                fd = real["os_open"](path, flags, *a, **kw)
                if not existed:
                    self._journal.append(("create", p))
            else:
                fd = real["os_open"](path, flags, *a, **kw)
            self._fd_paths[fd] = p
            return fd

        def mkdir(path, *a, **kw):
            if not self._mine(path):
                return real["mkdir"](path, *a, **kw)
            p = Path(path).resolve()
            self._point("mkdir", p)
            real["mkdir"](path, *a, **kw)
            self._journal.append(("create", p))

        def unlink(path, *a, **kw):
            if kw.get("dir_fd") is not None or not self._mine(path):
                return real["unlink"](path, *a, **kw)
            p = Path(path).resolve()
            self._point("unlink", p)
            self._journal.append(("remove", p, self._backup(p)))
            return real["unlink"](path, *a, **kw)

        def rmtree(path, *a, **kw):
            if not self._mine(path):
                return real["rmtree"](path, *a, **kw)
            p = Path(path).resolve()
            if not p.exists():
                return None
            self._point("rmtree", p)
            self._journal.append(("remove", p, self._backup(p)))
            return real["rmtree"](path, *a, **kw)

        builtins.open = self._open(real["open"])
        io.open = self._open(real["io_open"])
        os.fsync, os.replace, os.open, os.mkdir = fsync, replace, os_open, mkdir
        os.unlink, shutil.rmtree = unlink, rmtree
        try:
            yield self
        finally:
            builtins.open, io.open = real["open"], real["io_open"]
            os.fsync, os.replace, os.open, os.mkdir = real["fsync"], real["replace"], real["os_open"], real["mkdir"]
            os.unlink, shutil.rmtree = real["unlink"], real["rmtree"]

    # ------------------------------------------------------------------ after a crash
    def power_loss(self) -> None:
        """Undo, newest first, everything that was not durable when the power went."""
        for record in reversed(self._journal):
            kind, path = record[0], Path(record[1])
            if kind == "data":
                backup = record[2]
                if path.is_file():
                    if backup is None:
                        path.write_bytes(b"")  # the name survived, the unsynced data did not
                    else:
                        shutil.copy2(backup, path)
            elif kind == "create":
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
            elif kind == "rename":
                src, backup = Path(record[2]), record[3]
                if path.exists():
                    os.replace(path, src)
                if backup is not None:
                    (shutil.copytree if backup.is_dir() else shutil.copy2)(backup, path)
            elif kind == "remove":
                backup = record[2]
                if backup is not None and not path.exists():
                    (shutil.copytree if backup.is_dir() else shutil.copy2)(backup, path)
        self._journal = []
        self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self._backups, ignore_errors=True)
