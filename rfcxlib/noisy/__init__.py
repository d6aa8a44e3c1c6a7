"""Learning from partial and noisy labels: a controlled check (``toy``), co-teaching, pseudo-labels,
and notebook 05's comparison of the methods (``compare``)."""
