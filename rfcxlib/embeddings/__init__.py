"""BirdNET embeddings and the heads trained on them: settings (``head_config``), window targets
(``head_targets``), the head and its training (``head_fit``), label methods (``head_methods``), the
fold loop and model folder (``head_folds``) and the window scorer of ``rfcx predict`` (``scorer``)."""
