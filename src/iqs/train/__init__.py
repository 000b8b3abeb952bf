"""Training: the data module, the Lightning module, the frozen-feature cache and `iqs train`."""
