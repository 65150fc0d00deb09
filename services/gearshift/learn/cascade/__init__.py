"""Offline fitting of the cascade's answer-aware escalation estimator."""
