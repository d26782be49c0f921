"""Read files a user names without hanging, exhausting memory or leaking secrets.

A configuration, model or password file named by a user may be a FIFO
(open() blocks until a writer comes), a device (/dev/zero never ends), a
directory, a symlink loop or a huge file. `stat_regular` refuses all of
these from one os.stat() before anything is opened; `read_regular` then
opens with O_NONBLOCK (so a FIFO swapped in after the stat cannot block),
checks the descriptor again and reads at most a bound. `check_private`
refuses a file holding a secret that others can read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class FileProblem(Exception):
    """A file that cannot be used; `reason` says why without the path, str() with it."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{self.path}: {reason}")

    @property
    def found(self) -> str:
        """The reason as what was found ("no file there (not found)", "it is a FIFO..."): expected X, found Y."""
        if self.reason.startswith("not found"):
            return "no file there (not found" + self.reason[len("not found"):] + ")"
        if self.reason.startswith(("is ", "holds ")):
            return "it " + self.reason
        return self.reason


def stat_regular(path: str | Path) -> os.stat_result:
    """os.stat() of `path` (symlinks followed) if it is a regular file; FileProblem otherwise."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileProblem(path, "not found") from None
    except NotADirectoryError:
        raise FileProblem(path, "not found: a part of the path is not a directory") from None
    except PermissionError:
        raise FileProblem(path, "permission denied") from None
    except ValueError:
        raise FileProblem(path, "a path with a NUL byte") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FileProblem(path, "a symbolic link loop") from None
        raise FileProblem(path, f"cannot be read ({e.strerror or e})") from None
    for test, kind in _KINDS:
        if test(st.st_mode):
            raise FileProblem(path, f"is {kind}, not a regular file")
    if not stat.S_ISREG(st.st_mode):
        raise FileProblem(path, "is not a regular file")
    return st


def read_regular(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes`; FileProblem for anything else."""
    st = stat_regular(path)
    if st.st_size > max_bytes:
        raise FileProblem(path, f"is {st.st_size} bytes, more than the limit of {max_bytes}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except PermissionError:
        raise FileProblem(path, "permission denied") from None
    except OSError as e:
        raise FileProblem(path, f"cannot be opened ({e.strerror or e})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):     # swapped for something else since the stat
            raise FileProblem(path, "is not a regular file")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise FileProblem(path, f"is more than the limit of {max_bytes} bytes")
    except OSError as e:
        raise FileProblem(path, f"cannot be read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def check_private(path: str | Path, st: os.stat_result | None = None) -> None:
    """FileProblem if others may read or write the file, or its group write it: it holds a password or a key.

    Group read is allowed: a service's password file is 0640 with the
    service's group (as `humus gateway service` writes it).
    """
    st = st or stat_regular(path)
    if st.st_mode & (stat.S_IRWXO | stat.S_IWGRP):
        raise FileProblem(path, f"holds a secret but is open to others (mode {stat.S_IMODE(st.st_mode):04o}); "
                                "chmod 600 it (or 640 for a service's group)")
