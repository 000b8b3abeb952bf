"""OpenCV release matrix: tool venvs per release, the worker run inside them, `make compat`."""
