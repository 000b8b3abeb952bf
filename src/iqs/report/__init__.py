"""Reports read from tracked runs: `iqs compare`, CV pooling, plots, the run's test artifacts, the model
card and `iqs ui`. Reads tracking's run records; never opens or ends a run."""
