"""Where a study's results come from: the config's hash, the code version and the machine.

Every cell's row carries ``cell_provenance`` (``store.COLUMNS``' ``provenance``), computed in
the process that evaluated the cell (on a Dask worker, the worker's machine and code), beside
the package versions of ``store.versions``; the report lists them and says when the database
mixes code versions.

The code version is the git commit of the checkout robustcnn is imported from, read from the
files of its ``.git`` (nothing is run; uncommitted changes are not seen), or, for an installed
package (no ``.git`` beside it), the package version. It is read once per process, at the
study's start (``runner.run_study``), so a checkout changed under a running study does not
change what its rows record.
"""

import functools
import hashlib
import json
import os
import platform
import re

_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # SHA-1 or SHA-256 object names
_MAX_GIT_FILE = 1 << 20  # HEAD, a ref, a .git file: a few bytes; packed-refs: a few KiB


def config_hash(document):
    """The SHA-256 (hex) of a study file's parsed TOML document as canonical JSON: the same
    settings give the same hash whatever the file's comments, layout or key order."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _read(path):
    with open(path, "rb") as f:
        return f.read(_MAX_GIT_FILE).decode("utf-8", "replace")


def git_commit(directory):
    """(commit, branch or None) of the git checkout whose work tree is ``directory``, read from
    its ``.git`` directory or file (a worktree's ``gitdir:`` pointer); None when it is not one or
    its files do not say."""
    dot_git = os.path.join(directory, ".git")
    try:
        if os.path.isfile(dot_git):
            pointer = _read(dot_git).strip()
            if not pointer.startswith("gitdir:"):
                return None
            git_dir = os.path.join(directory, pointer[len("gitdir:"):].strip())
        elif os.path.isdir(dot_git):
            git_dir = dot_git
        else:
            return None
        common = git_dir
        if os.path.isfile(os.path.join(git_dir, "commondir")):
            common = os.path.join(git_dir, _read(os.path.join(git_dir, "commondir")).strip())
        head = _read(os.path.join(git_dir, "HEAD")).strip()
        if _SHA.match(head):
            return head, None
        if not head.startswith("ref:"):
            return None
        ref = head[len("ref:"):].strip()
        if ".." in ref.split("/"):
            return None
        for base in (git_dir, common):
            path = os.path.join(base, ref)
            if os.path.isfile(path):
                sha = _read(path).strip()
                return (sha, _branch(ref)) if _SHA.match(sha) else None
        packed = os.path.join(common, "packed-refs")
        if os.path.isfile(packed):
            for line in _read(packed).splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref and _SHA.match(parts[0]):
                    return parts[0], _branch(ref)
    except (OSError, ValueError):
        return None
    return None


def _branch(ref):
    return ref[len("refs/heads/"):] if ref.startswith("refs/heads/") else ref


@functools.lru_cache(maxsize=1)
def code_version():
    """{"version": robustcnn's version, "commit": the git commit or None, "branch": its branch
    or None} of the robustcnn this process runs (read once per process)."""
    from .. import __version__

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = git_commit(package)
    commit, branch = found if found else (None, None)
    return {"version": __version__, "commit": commit, "branch": branch}


def code_label(code):
    """A code version as the report names it: ``git 1a2b3c4d5e6f`` or ``robustcnn 0.1.0``."""
    code = code or {}
    if code.get("commit"):
        return f"git {code['commit'][:12]}"
    return f"robustcnn {code.get('version', '?')}"


def _cpu_model():
    try:
        for line in _read("/proc/cpuinfo").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


@functools.lru_cache(maxsize=1)
def machine():
    """{"platform", "machine", "cpus", "cpu"}: the operating system, architecture, logical CPU
    count and CPU model of this machine."""
    return {"platform": platform.platform(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "cpu": _cpu_model()}


def machine_label(m):
    """A machine as the report names it: ``Linux-6.1-x86_64, 2 CPUs (AMD EPYC 7B13)``."""
    m = m or {}
    return f"{m.get('platform', '?')}, {m.get('cpus', '?')} CPUs ({m.get('cpu') or '?'})"


def cell_provenance(study):
    """The ``provenance`` of a cell of ``study`` evaluated in this process."""
    return {"config": getattr(study, "config_hash", None), "code": code_version(),
            "machine": machine()}
