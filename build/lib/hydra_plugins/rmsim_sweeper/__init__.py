"""rmsim's hydra sweeper: the basic sweeper, minus the jobs a previous run of the sweep already finished."""
