"""Gearshift operator: reconciles ModelRoute objects (kopf). Run: python -m gearshift_operator."""
