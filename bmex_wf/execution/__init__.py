"""Running workflows: plugin set-up, work-directory locking and per-image outcomes."""
