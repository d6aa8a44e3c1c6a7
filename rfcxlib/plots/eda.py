"""eda figures."""
