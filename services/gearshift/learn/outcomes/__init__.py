"""Retraining the difficulty scorer from recorded outcomes (`gearshift scorer train --outcomes`)."""
