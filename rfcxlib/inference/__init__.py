"""Scoring recordings with trained models: windows, scorers, rfcx predict, Raven tables, thresholds, export."""
