"""robustcnn: a NumPy + Numba engine for studying how robust compressed CNNs are against
adversarial attacks, on a CPU.

Subpackages: ``robustcnn.engine`` (kernels, Net, training), ``robustcnn.models`` (zoo, data),
``robustcnn.attacks`` (gradient attacks), ``robustcnn.compress`` (compression).
Importing ``robustcnn`` loads nothing heavy; the subpackages load what they need.
"""

__version__ = "0.1.0"
