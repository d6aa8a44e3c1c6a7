"""Audio in: decoding whole recordings for training and streaming blocks for prediction."""
