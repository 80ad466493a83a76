"""The driver of a study: the plan of trials, the search and repeat phases (Ray Tune + Optuna), progress."""
