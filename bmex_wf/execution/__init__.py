"""Safeguards of a run: work-directory lock, worker processes that die with the run."""
