"""noisy figures."""
