"""Training of BME-X-family enhancement networks (``bmex-wf train``).

``degradations`` (TorchIO corruptions of crops), ``targets`` (automatic tissue
labels), ``data`` (sources, inference-identical preprocessing, cache, crops),
``loop`` (loss, optimizer, validation, checkpoints, export) and ``cli``.
"""
