"""Running workflows: Nipype plugins and SLURM resources, work-directory locking, workers that die with their run, and per-image outcomes."""
