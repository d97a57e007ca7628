"""Chapter 01: the data selection as the book shows it — cutflow tables, control plots and
headline yields of the skims.  The selections themselves, the NanoAOD reader, the skims and the
histogram engine are shared layers (:mod:`wmnb.engine`), since every later chapter reads them."""
from __future__ import annotations

__all__ = ["chapter"]
