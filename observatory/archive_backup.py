"""Back up a live SQLite archive (or ingest state file) with SQLite's online backup API.

A plain `cp` of a database in WAL mode is not a backup: committed
transactions may still live only in the `-wal` file, and a copy taken while
a writer checkpoints can mix two states. The backup API
(https://www.sqlite.org/backup.html, Python's `sqlite3.Connection.backup`)
copies a consistent snapshot page by page while ingest keeps writing; done
in one step it holds one read transaction, which in WAL mode does not block
writers (https://www.sqlite.org/wal.html, "Concurrency").

The copy is written beside the destination, switched to the rollback
journal (one self-contained file, no `-wal` to forget), checked with
`PRAGMA quick_check`, synced and renamed into place: the destination is
the old backup or the new one, never half of one.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path


class BackupError(Exception):
    """One line naming the file and what to check."""


@dataclass(frozen=True)
class BackupResult:
    source: Path
    dest: Path
    bytes: int
    seconds: float


def backup_sqlite(source: str | Path, dest: str | Path, mode: int = 0o640) -> BackupResult:
    src_path, dst_path = Path(source), Path(dest)
    if not src_path.is_file():
        raise BackupError(f"{src_path}: no such SQLite file; expected the archive, e.g. /var/lib/humus/archive.sqlite")
    if dst_path.is_dir():
        dst_path = dst_path / src_path.name
    if dst_path.resolve() == src_path.resolve():
        raise BackupError(f"{dst_path}: the backup must not overwrite its source")
    tmp = dst_path.with_name(f".{dst_path.name}.partial{os.getpid()}")
    started = time.monotonic()
    try:
        src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as e:
        raise BackupError(f"{src_path}: cannot open it read-only ({e})") from None
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        os.close(fd)
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)                       # pages=-1: the whole snapshot in one step
            dst.execute("PRAGMA journal_mode=DELETE")
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"{dst_path}: the copy fails its integrity check ({check}); "
                                  f"check {src_path} with PRAGMA integrity_check")
        finally:
            dst.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dst_path)
    except sqlite3.Error as e:
        raise BackupError(f"backing up {src_path} to {dst_path} failed ({e}); check free space and permissions") \
            from None
    except OSError as e:
        raise BackupError(f"backing up {src_path} to {dst_path} failed ({e.strerror}); "
                          "check the destination directory") from None
    finally:
        src.close()
        tmp.unlink(missing_ok=True)
    return BackupResult(src_path, dst_path, dst_path.stat().st_size, time.monotonic() - started)
