"""Combining the models of a run: their score files and the ensemble."""
