"""Features: log-mel images, augmentation, the tf.data pipeline and the CNN's input channels."""
