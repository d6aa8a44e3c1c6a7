"""The synthetic data sets in the RFCx layout (profiles tiny, mini, field, full)."""
