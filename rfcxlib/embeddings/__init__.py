"""BirdNET embeddings and the heads trained on them."""
