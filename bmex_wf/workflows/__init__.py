"""Nipype workflows (``init_*_wf`` factories)."""
