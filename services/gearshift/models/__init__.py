"""Model files: locating and preparing the embedded default model."""
