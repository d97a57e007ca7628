"""Chapter 01's machinery: NanoAOD reading, selections, skims, the histogram engine, executors.

Public API (contracts in DEVELOPING.md):

* :func:`read_skim` ``(profile, selection, sample) -> dict[str, np.ndarray]``, the same lazily
  in chunks with :func:`skim_chunks` (a re-iterable :class:`SkimChunks`), and
  :func:`list_skim_samples` ``(profile, selection) -> list[str]``;
* :func:`make_skims` ``(profile, executor="local", scheduler=None)`` writes every skim;
* :func:`fill` and :func:`histogram_skim` (see :mod:`wmnb.engine.histogram`);
* :mod:`wmnb.engine.selections`: the selections, ``w_signal_mask``, ``abcd_region`` ...;
* :func:`run_selections` / :func:`histogram_files`: selections and histograms straight from
  NanoAOD files (used by ``wmnb select``);
* executors ``local`` and ``dask`` (:mod:`wmnb.engine.executors`).
"""
from __future__ import annotations

from .histogram import (corrected_columns, derive, fill, histogram_files, histogram_skim, preset_variations,
                        process_columns)
from .nanoaod import NanoAODError
from .selections import (ABCD_REGIONS, SELECTIONS, abcd_region, final_cutflow, final_mask, w_signal_mask)
from .skims import (SkimChunks, list_skim_samples, make_skims, read_cutflow, read_skim, run_selections,
                    skim_chunks, skim_index, skim_path, skims_dir, write_skim)

__all__ = [
    "ABCD_REGIONS", "NanoAODError", "SELECTIONS", "SkimChunks", "abcd_region", "corrected_columns", "derive", "fill",
    "final_cutflow", "final_mask", "histogram_files", "histogram_skim", "list_skim_samples", "make_skims",
    "preset_variations", "process_columns", "read_cutflow", "read_skim", "run_selections", "skim_chunks",
    "skim_index", "skim_path", "skims_dir", "w_signal_mask", "write_skim",
]
