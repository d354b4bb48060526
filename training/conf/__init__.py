"""Hydra configs of the training app (``pkg://vita_training.conf``), apart from the inference app's groups."""
