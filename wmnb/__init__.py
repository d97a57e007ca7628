"""wmnb — the CMS W-boson mass measurement as an analysis book on a synthetic universe.

The package holds every piece of logic; the notebooks in ``notebooks/`` only tell the story.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
