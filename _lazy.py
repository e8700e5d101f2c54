"""Public names of a package that load on first use (PEP 562), so that importing the package
stays as cheap as it was while ``dir()`` and tab completion list everything it offers.

    __all__, __getattr__, __dir__ = lazy_exports(__name__, {"pipeline": ("compress", …)},
                                                 submodules=("pipeline", …))

A name that is also a submodule's is the submodule: Python binds a package attribute to a
submodule whenever the submodule is imported, so a function of that name would not stay put.
"""

import importlib
import sys


def lazy_exports(package, names, *, submodules=()):
    """(``__all__``, ``__getattr__``, ``__dir__``) for ``package`` (its ``__name__``):
    ``names`` maps a submodule to the public names it defines; ``submodules`` are exported as
    themselves."""
    home = {name: module for module, defined in names.items() for name in defined}
    clash = sorted(set(home) & set(submodules))
    if clash:
        raise ValueError(f"{package}: {clash} name both a submodule and a name in it")

    def __getattr__(name):
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home[name]}"), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip __getattr__
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(home) | set(submodules))

    return sorted(set(home) | set(submodules)), __getattr__, __dir__
