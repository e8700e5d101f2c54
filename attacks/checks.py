"""The record of one sanity check or gradient-masking flag (``sanity``, ``masking``)."""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Check:
    """One sanity check: its name, whether it passed, and the figures behind the verdict."""

    name: str
    passed: bool
    detail: str

    def to_dict(self):
        return asdict(self)
