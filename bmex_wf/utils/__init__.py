"""Plain helper functions wrapped by the Nipype interfaces."""
