"""Offline fitting, training and evaluation of the difficulty scorer."""
