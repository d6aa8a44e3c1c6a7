"""training figures."""
