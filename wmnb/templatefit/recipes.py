"""What every boson-mass recipe shares (chapters 07 and 08): a mixin for the recipe dataclass.

A mass fit's configuration carries the simulation's line shape (``ref_mass_gev``,
``ref_width_gev``), the POI step (``mass_step_mev``), the Barlow–Beeston-lite scale
(``bb_scale``) and the eta merge of the mass variation (``mass_eta_merge``); its binning has
``eta``, ``pt`` and ``charge`` axes.  The mixin turns those into the recipe members of
:class:`~wmnb.templatefit.templates.TemplateRecipe`: the step, the scale, the merge, the POI
layouts of :data:`~wmnb.templatefit.binning.MASS_POI_LAYOUTS`, the cross-check regions and the
Breit–Wigner mass reweighting of the generator boson mass.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .binning import MASS_POI_LAYOUTS, Binning, region_mask
from .breitwigner import mass_weights
from .lhe import require


class BosonMassRecipe:
    """Mixin of a mass recipe (a frozen dataclass with ``config`` and ``binning`` fields)."""

    config: Any
    binning: Binning

    @property
    def mass_step_mev(self) -> float:
        return float(self.config.mass_step_mev)

    @property
    def bb_scale(self) -> float:
        return float(self.config.bb_scale)

    @property
    def mass_merge(self) -> tuple[str, int]:
        return ("eta", int(self.config.mass_eta_merge))

    @property
    def poi_layouts(self) -> Mapping[str, Sequence[tuple[str, str]]]:
        return MASS_POI_LAYOUTS

    def region_mask(self, region: str) -> np.ndarray:
        return region_mask(self.binning, region)

    def mass_factors(self, cols: Mapping[str, np.ndarray], shift_mev: float, sample: str) -> np.ndarray:
        """Weights moving the boson mass by ``shift_mev`` (the width following by Γ ∝ M³)."""
        m = require(cols, "gen_mass", sample, "signal templates need the generator boson mass (GeV)")
        cfg = self.config
        return mass_weights(m, cfg.ref_mass_gev, cfg.ref_width_gev, cfg.ref_mass_gev + shift_mev * 1e-3)
