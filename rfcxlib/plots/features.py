"""features figures."""
