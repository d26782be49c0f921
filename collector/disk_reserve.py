"""Room kept on a filling disk so the spool can always drain: a preallocated reserve file.

Why it exists: in WAL mode every change, a DELETE included, is first
appended to the ``-wal`` file (https://www.sqlite.org/wal.html, "How WAL
Works"), so on a full disk SQLite cannot even delete rows; it answers
SQLITE_FULL ("database or disk is full", https://www.sqlite.org/rescode.html#full).
A spool that filled its disk could then never form a batch or delete an
acknowledged one, and would stay full forever.

The reserve is a plain file of `size` bytes whose blocks are really
allocated (posix_fallocate(3), not a sparse file). The spool unlinks it when
a drain step (forming a batch, deleting an acknowledged one) fails with
SQLITE_FULL and retries that step in the space it freed; it allocates the
file again once the filesystem has room for it. Copy-on-write filesystems
(btrfs, ZFS) do not guarantee that allocated blocks stay writable; Raspberry
Pi OS uses ext4, where they do.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def free_bytes(directory: str | Path) -> int | None:
    """Bytes an unprivileged writer may still use on the filesystem of `directory` (statvfs f_bavail)."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def total_bytes(directory: str | Path) -> int | None:
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_blocks * st.f_frsize


class DiskReserve:
    """One preallocated file; `present` says whether its room is currently held."""

    def __init__(self, path: str | Path, size: int) -> None:
        self.path = Path(path)
        self.size = max(0, int(size))
        self.present = False
        if self.size:
            try:
                self.present = self.path.stat().st_size >= self.size
            except OSError:
                self.present = False

    def ensure(self) -> bool:
        """Allocate the file if it is missing and there is room; whether the reserve is held now."""
        if self.present or not self.size:
            return self.present
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            self._unlink()
            log.debug("reserve %s: cannot allocate %d bytes yet (%s)", self.path, self.size, e)
            return False
        self.present = True
        return True

    def release(self) -> bool:
        """Give the reserve's room back to the filesystem; False if there was none to give."""
        if not self.present:
            return False
        self._unlink()
        self.present = False
        return True

    def _unlink(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("reserve %s: cannot remove it (%s); check the data directory's permissions", self.path, e)
