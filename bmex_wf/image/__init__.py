"""Images: reading and validation, saving, resampling, orientation and mask morphology."""
