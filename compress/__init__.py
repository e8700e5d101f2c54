"""Compression: magnitude pruning and sensitivity analysis (``prune``, ``sensitivity``), trained
quantization (``quantize``), the Deep Compression pipeline with Huffman coding (``pipeline``),
the compressed model file (``modelfile``) and size accounting (``report``)."""
