"""Certified robustness: bounds no attack can beat, computed on the weights as stored.

    ibp          interval bound propagation (Gowal et al. 2018), forward and backward, for every
                 layer type with an interval rule and every weight format
    crown_ibp    CROWN-IBP's linear bounds of the margins (Zhang et al. 2020), and their
                 reverse-mode derivatives
    objective    IBP / CROWN-IBP training as an objective for ``fit`` and for compression
    smoothing    randomized smoothing (Cohen et al. 2019): CERTIFY, PREDICT, Gaussian-noise
                 training
    evaluate     certified accuracy at a list of radii (what ``robustcnn certify`` runs)
"""
