"""Training and calibrating the semantic cache's verifier and statement thresholds."""
