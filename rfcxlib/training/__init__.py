"""Training a model over its folds: steps, losses, fingerprints of finished folds, several workers."""
