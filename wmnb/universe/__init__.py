"""Chapter 00: the synthetic CMS-2016-like universe.

* :func:`load_card` -- validated truth cards (``nominal``, ``data``, ``closure`` or a path);
* :func:`generate_universe` -- NanoAOD-like ROOT samples (simulation, data, closure) + manifest;
* :func:`read_manifest` -- what was generated, with cross sections and sums of weights;
* :func:`recorded_data_card` -- the data card a universe was generated from (its kept copy).
"""
from __future__ import annotations

from .card import CardError, card_hash, load_card, validate_card
from .generate import generate_universe, read_manifest, recorded_data_card, universe_settings
from .staging import GenerateError, GenerationTerminated

__all__ = ["CardError", "GenerateError", "GenerationTerminated", "card_hash", "generate_universe",
           "load_card", "read_manifest", "recorded_data_card", "universe_settings", "validate_card"]
