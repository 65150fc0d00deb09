"""One request on one chain of routes: plan it (planner.py), then run it (executor.py)."""
