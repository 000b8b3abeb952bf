"""Export a checkpoint: each profile (deploy.export.profiles) names its file, wrapper and verifier."""
