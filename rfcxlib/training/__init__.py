"""Training a model over its folds: steps, losses, fingerprints of finished results, several workers."""
