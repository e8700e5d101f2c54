"""Compression: pruning, trained quantization, Huffman coding, the compressed model file and
adversarial-aware compression. Not built yet; the engine it builds on is ``robustcnn.engine``."""
