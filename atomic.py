"""Atomic file writes: write a temporary file beside the target, fsync it, rename it over.

An interrupted run leaves either the old file or the new one, never half of one. A run killed
outright (``kill -9``) may leave its temporary file behind: ``.<name>.<host>.<pid>.<random>.tmp``
beside the target. The next write to the same path removes those whose process is gone (same
host, pid no longer running), so they do not pile up; another live writer's file is left alone.
"""

import contextlib
import os
import re
import secrets
import socket


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in ``path``'s directory; on success it replaces ``path``.

    The writer opens and closes the temporary file itself (h5py, numpy, open()). On an
    exception the temporary file is removed and ``path`` is left as it was. The result gets
    the permissions of any new file (0o666 less the umask). Temporary files of earlier writes
    to ``path`` whose process was killed are removed first.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(path)
    remove_stale(directory, base)
    tmp = os.path.join(directory, f".{base}.{_host()}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    # O_EXCL: never clobber another writer's temporary file.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _host():
    """This machine's name as it goes into temporary names (no dots: they separate fields)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def remove_stale(directory, base):
    """Remove the temporary files of writes to ``directory/base`` made on this host by
    processes that are no longer running → the paths removed."""
    pattern = re.compile(rf"\.{re.escape(base)}\.{re.escape(_host())}\.(\d+)\.[0-9a-f]+\.tmp")
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        found = pattern.fullmatch(name)
        if found and not _running(int(found.group(1))):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
                removed.append(os.path.join(directory, name))
    return removed


def _running(pid):
    """Whether a process ``pid`` exists on this host."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OverflowError:
        return False
    return True
