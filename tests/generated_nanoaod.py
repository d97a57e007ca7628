"""Test helper: a NanoAOD file of one process generated with a card, for tests that run the
engine's selections on the generator's events (shared by the nonprompt and tag-and-probe tests)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wmnb.universe.detector import simulate
from wmnb.universe.events import assemble
from wmnb.universe.processes import GENERATORS
from wmnb.universe.writer import write_tree


def write_generated(path: Path, card: dict[str, Any], process: str, n: int, seed: int, *, is_data: bool,
                    drop_prefired: bool) -> Path:
    """Generate ``n`` events of ``process``, simulate the detector (``is_data``: data-like, with
    ``keep`` for prefiring, used if ``drop_prefired``), keep single-muon-triggered events and
    write them with run/lumi/event ids; simulation keeps its generator branches."""
    t = GENERATORS[process](np.random.default_rng(seed), n, card["physics"])
    t = t.select(t.passed)
    reco = simulate(t, card["detector"], np.random.default_rng(seed + 1), is_data=is_data)
    keep = reco["scalars"]["HLT_IsoMu24"] & (reco["keep"] if drop_prefired else True)
    br = assemble(t, reco, keep, not is_data)
    m = int(keep.sum())
    br.update({"run": np.ones(m, np.uint32), "luminosityBlock": np.ones(m, np.uint32),
               "event": np.arange(1, m + 1, dtype=np.uint64)})
    write_tree(path, [br], {"run": np.array([1], np.uint32)}, {"process": process})
    return path
