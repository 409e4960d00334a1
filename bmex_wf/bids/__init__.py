"""BIDS inputs (discovery, filters, ages of scans) and derivatives (names, sidecars, atomic writes)."""
