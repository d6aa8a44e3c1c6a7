"""Reports of a run: the HTML/PDF summary and the ablation tables."""
