"""Write files that hold secrets (passwords, keys, credential files) safely.

A secret written with `open(..., "w")` exists for a moment with the
process's umask (often 0644) and, if the write is cut, half-written. Here
the file is created under a temporary name with its final mode from the
first byte (O_CREAT with mode, umask cleared for the call), synced, given
its group, then renamed over the old one: readers see the old file or the
new one, never a readable or partial secret.
"""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path


def write_private(path: str | Path, data: str | bytes, mode: int = 0o600, group: str | None = None,
                  owner: str | None = None) -> Path:
    """Atomically replace `path` with `data`, mode `mode`, owned by `owner`:`group` (those that exist, as root)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    old = os.umask(0o077)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    finally:
        os.umask(old)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
            uid, gid = _uid(owner), _gid(group)
            if uid is not None or gid is not None:
                os.fchown(f.fileno(), -1 if uid is None else uid, -1 if gid is None else gid)
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(p.parent)
    return p


def _uid(owner: str | None) -> int | None:
    """The user's id when it exists and we are root (only root may give a file away)."""
    if not owner or os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        return None


def _gid(group: str | None) -> int | None:
    """The group's id when it exists and we may give files to it (root, or a member)."""
    if not group:
        return None
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return None
    if os.geteuid() == 0 or gid in os.getgroups():
        return gid
    return None


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
