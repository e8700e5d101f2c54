"""study/provenance.py: the config's hash, the code version read from a checkout's .git files
(nothing run), the machine; and the report's provenance section."""

import os
import shutil
import subprocess

import pytest

from robustcnn.study import provenance
from robustcnn.study.report.provenance import mixed_warning, provenance_section

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


def test_config_hash_ignores_layout_and_key_order_but_not_settings():
    a = {"study": {"name": "x", "seeds": [0, 1]}, "models": [{"name": "m"}]}
    b = {"models": [{"name": "m"}], "study": {"seeds": [0, 1], "name": "x"}}
    assert provenance.config_hash(a) == provenance.config_hash(b)
    assert len(provenance.config_hash(a)) == 64
    assert provenance.config_hash(a) != provenance.config_hash({**a, "study": {"seeds": [0]}})


def test_a_parsed_study_carries_its_config_hash(tiny_mnist):
    from study_helpers import tiny_config

    from robustcnn.study.config import parse_config

    raw = tiny_config(tiny_mnist)
    assert parse_config(raw).config_hash == provenance.config_hash(raw)
    assert parse_config(tiny_config(tiny_mnist, seeds=(1,))).config_hash != \
        provenance.config_hash(raw)


def _git_dir(root, head, refs=None, packed=None):
    git = root / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text(head + "\n")
    for name, sha in (refs or {}).items():
        (git / "refs" / "heads" / name).write_text(sha + "\n")
    if packed:
        (git / "packed-refs").write_text("# pack-refs with: peeled fully-peeled sorted\n"
                                         + "".join(f"{s} {r}\n" for r, s in packed.items()))
    return git


def test_git_commit_from_a_branch_a_detached_head_and_packed_refs(tmp_path):
    a, b, c, d = (tmp_path / n for n in "abcd")
    _git_dir(a, "ref: refs/heads/main", refs={"main": SHA})
    assert provenance.git_commit(a) == (SHA, "main")
    _git_dir(b, OTHER)
    assert provenance.git_commit(b) == (OTHER, None)
    _git_dir(c, "ref: refs/heads/topic", packed={"refs/heads/topic": OTHER})
    assert provenance.git_commit(c) == (OTHER, "topic")
    d.mkdir()
    assert provenance.git_commit(d) is None  # not a checkout: the package version instead
    _git_dir(tmp_path / "e", "ref: refs/heads/gone")
    assert provenance.git_commit(tmp_path / "e") is None
    _git_dir(tmp_path / "f", "ref: refs/heads/main", refs={"main": "not a sha"})
    assert provenance.git_commit(tmp_path / "f") is None


def test_git_commit_of_a_worktree_follows_its_gitdir_file(tmp_path):
    main = _git_dir(tmp_path / "main", "ref: refs/heads/main", refs={"main": SHA})
    wt_git = main / "worktrees" / "topic"
    wt_git.mkdir(parents=True)
    (wt_git / "HEAD").write_text("ref: refs/heads/topic\n")
    (wt_git / "commondir").write_text("../..\n")
    (main / "refs" / "heads" / "topic").write_text(OTHER + "\n")
    work = tmp_path / "wt"
    work.mkdir()
    (work / ".git").write_text(f"gitdir: {wt_git}\n")
    assert provenance.git_commit(work) == (OTHER, "topic")
    (work / ".git").write_text("something else\n")
    assert provenance.git_commit(work) is None


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git as the oracle")
def test_code_version_of_this_checkout_is_gits_head():
    package = os.path.dirname(os.path.dirname(os.path.abspath(provenance.__file__)))
    if not os.path.exists(os.path.join(package, ".git")):
        pytest.skip("robustcnn is not imported from a git checkout")
    head = subprocess.run(["git", "-C", package, "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    code = provenance.code_version()
    assert code["commit"] == head
    assert provenance.code_label(code) == f"git {head[:12]}"
    assert provenance.code_label({"version": "0.1.0", "commit": None}) == "robustcnn 0.1.0"


def test_machine_names_platform_cpus_and_model():
    m = provenance.machine()
    assert m["cpus"] == os.cpu_count() and m["platform"] and m["machine"]
    assert provenance.machine_label(m).startswith(f"{m['platform']}, {m['cpus']} CPUs")


def _row(i, commit, version="0.1.0"):
    return {"key": f"k{i}", "study": "s", "versions": {"robustcnn": version, "numpy": "2",
                                                      "numba": "0.6", "python": "3.12"},
            "provenance": {"config": "ab" * 32, "code": {"version": version, "commit": commit},
                           "machine": {"platform": "Linux-x", "cpus": 2, "cpu": "EPYC"}}}


def test_the_report_lists_provenance_and_warns_of_mixed_code_versions():
    rows = [_row(0, SHA), _row(1, SHA)]
    text = "\n".join(provenance_section(rows))
    assert mixed_warning(rows) is None
    assert f"| git {SHA[:12]} | 2 |" in text and "| s: abababababababab | 2 |" in text
    assert "| Linux-x, 2 CPUs (EPYC) | 2 |" in text and "| 0.1.0 / 2 / 0.6 / 3.12 | 2 |" in text
    assert "one code version" in text
    rows.append(_row(2, None, "0.2.0"))
    warning = mixed_warning(rows)
    assert warning.startswith("**Mixed code versions**: the cells were computed by 2 versions")
    assert f"git {SHA[:12]}: 2 cells, robustcnn 0.2.0: 1 cells" in warning
    assert warning in "\n".join(provenance_section(rows))
    old = dict(_row(3, None), provenance=None)  # a version-2 cell
    text = "\n".join(provenance_section([old]))
    assert "1 of 1 cells record no provenance" in text and "No cell records" in text
