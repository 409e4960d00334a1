"""Nipype interfaces wrapping each BME-X processing step."""
