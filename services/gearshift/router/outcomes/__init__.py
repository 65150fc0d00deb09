"""Outcomes: what happened to the router's answers, so the scorer can learn from them.

Every generated answer's decision is recorded (off the hot path); users, services and
the shadow judge attach outcomes to it by response id; `gearshift scorer train
--outcomes` retrains the scorer from them. See docs/scorer.md.
"""
