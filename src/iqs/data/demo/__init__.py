"""The embedded demo dataset: real photographs from installed packages, graded distortions, simulated raters.

It is a synthetic stand-in for a real quality dataset, written in the official on-disk formats of
AVA, KonIQ-10k and SPAQ so that the real adapters read it, and built offline in seconds.
"""

from __future__ import annotations

from iqs.data.demo.build import DEMO_VERSION, DemoSpec, build_demo, ensure_demo, read_build
from iqs.data.demo.command import main

__all__ = ["DEMO_VERSION", "DemoSpec", "build_demo", "ensure_demo", "main", "read_build"]
