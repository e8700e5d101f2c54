"""Defences that are neither attacks nor compression, and the attacks that break them.

    distillation   defensive distillation (Papernot et al. 2016): a training objective at
                   temperature T and the teacher → student procedure

Certified defences (IBP, CROWN-IBP, randomized smoothing) are in ``robustcnn.certify``.
"""
