"""Defences that are neither attacks nor compression, and the attacks that break them.

    distillation   defensive distillation (Papernot et al. 2016): a training objective at
                   temperature T and the teacher → student procedure
    squeeze        feature squeezing (Xu, Evans & Qi 2018): squeezers as engine layers, the
                   joint detector, its evaluation, and the adaptive attack through it

Certified defences (IBP, CROWN-IBP, randomized smoothing) are in ``robustcnn.certify``.
"""
