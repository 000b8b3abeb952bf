"""Export a checkpoint: each profile (core.export_profiles) names its file, wrapper and verifier."""
