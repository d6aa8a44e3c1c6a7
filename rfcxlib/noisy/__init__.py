"""Learning from partial and noisy labels: co-teaching, pseudo-labels and their runs."""
