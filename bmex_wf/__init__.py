"""bmex-wf: the BME-X brain-MRI enhancement model in Nipype workflows and a BIDS App."""

__version__ = "0.1.0"
__packagename__ = "bmex-wf"
__url__ = "https://github.com/bmex-wf/bmex-wf"
