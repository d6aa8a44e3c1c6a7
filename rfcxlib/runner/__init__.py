"""Running the notebook series: profiles, plans, preflight checks, execution and resume."""
