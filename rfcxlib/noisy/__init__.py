"""Learning from partial and noisy labels: a controlled check (``toy``), co-teaching, pseudo-labels,
soft pseudo-label rounds (``soft_labels``, ``soft_pseudo``), and notebook 05's comparison of the
methods (``compare``)."""
