"""The report's provenance: the config hashes, code versions, package versions and machines the
database's cells were computed with (``study.provenance``), and a warning when the code
versions are mixed."""

from collections import Counter

from ..provenance import code_label, machine_label
from .tables import markdown_table

PACKAGES = ("robustcnn", "numpy", "numba", "python")


def _counts(rows, label):
    """[(label, cells)] in order of first appearance; rows without it counted as None."""
    counts = Counter(label(r) for r in rows)
    return list(counts.items())


def code_versions(rows):
    """{code label: cells} of the rows that record one (schema version 3 on)."""
    return dict(Counter(code_label(r["provenance"].get("code")) for r in rows
                        if r.get("provenance")))


def mixed_warning(rows):
    """A line for the top of the report when the cells come from several code versions, else
    None."""
    found = code_versions(rows)
    if len(found) < 2:
        return None
    return (f"**Mixed code versions**: the cells were computed by {len(found)} versions of "
            f"robustcnn ({', '.join(f'{k}: {v} cells' for k, v in found.items())}); results "
            f"of different versions may not be comparable (see Provenance).")


def provenance_section(rows):
    """Config hashes, code versions, package versions and machines, each with its cell
    count."""
    recorded = [r for r in rows if r.get("provenance")]
    out = ["## Provenance", ""]
    if len(recorded) < len(rows):
        out += [f"{len(rows) - len(recorded)} of {len(rows)} cells record no provenance (stored "
                f"before it was recorded, results schema version 2): their package versions "
                f"only.", ""]

    def table(title, label, source):
        found = _counts(source, label)
        return [markdown_table([title, "cells"], [[k if k is not None else "–", n]
                                                  for k, n in found]), ""]

    if recorded:
        out += table("study: config hash (SHA-256 of the parsed study file)",
                     lambda r: f"{r['study']}: {(r['provenance'].get('config') or '–')[:16]}",
                     recorded)
        out += table("code version", lambda r: code_label(r["provenance"].get("code")),
                     recorded)
    out += table("package versions (" + ", ".join(PACKAGES) + ")",
                 lambda r: " / ".join(str((r["versions"] or {}).get(p, "?")) for p in PACKAGES),
                 rows)
    if recorded:
        out += table("machine (platform, logical CPUs, CPU model)",
                     lambda r: machine_label(r["provenance"].get("machine")), recorded)
    warning = mixed_warning(rows)
    out.append(warning or ("All cells that record it were computed by one code version."
                           if recorded else "No cell records its code version."))
    return out
