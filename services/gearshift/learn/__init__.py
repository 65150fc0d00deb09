"""Offline work: training, fitting, evaluation and calibration of the mesh's models.

The scorer's and the cascade's weights, outcome-driven retraining, the selection
evaluation and the semantic cache's verifier are fitted here. This package imports
serving code (to load and save the weights it fits); serving code never imports it, so
a reader of the serving tree need not look here. It ships in the wheel all the same:
`gearshift scorer train --outcomes` (the retrain CronJob) runs it from the router image.
"""
