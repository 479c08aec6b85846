"""Build steps for structsent's bundled default model (see scripts/build_default_model.py)."""
