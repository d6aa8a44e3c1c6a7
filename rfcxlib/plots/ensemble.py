"""ensemble figures."""
