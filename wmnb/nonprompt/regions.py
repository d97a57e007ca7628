"""The extended-ABCD regions as a recipe of the shared template-fit layer.

Chapter 05 fills the W selection's six isolation × m_T regions (:data:`wmnb.nonprompt.abcd.REGIONS`)
in the W fit's (eta, pT, charge) binning, region axis first: data, and every prompt simulation
with every published correction and all their variations, through the one correction pipeline
(:func:`wmnb.templatefit.templates.build_templates`).  The recipe differs from the W-mass fit's
only in its final cuts (any region instead of the signal region: isolation-failing events take
the failing-isolation scale factors of chapter 03's correction) and the region axis; the mass
templates of the signal processes let the chapter fit m_W in the signal region (the biased
pseudo-data test).  The secondary-vertex control region is the same regions for muons attached
to a secondary vertex (``sv_only``); it is filled at nominal only (:func:`fill_nominal`).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..conventions import LUMI_KAPPA, W_FIT_NORM_KAPPAS, W_FIT_PROCESSES, W_XSEC_KAPPA
from ..corrections import Variation
from ..templatefit.binning import W_BINNING, Axis, Binning
from ..templatefit.breitwigner import mass_weights
from ..templatefit.templates import SampleInput, select_events
from .abcd import REGIONS, SIGNAL

#: the prompt simulation of the W selection (every W-selection sample but the multijet one)
PROMPT_SAMPLES: tuple[str, ...] = tuple(s for s in W_FIT_PROCESSES if s != "qcd")
MULTIJET_SAMPLE = "qcd"
SIGNAL_SAMPLES = ("wplus_munu", "wminus_munu")
W_PRODUCTION = ("wplus_munu", "wminus_munu", "w_taunu")
REGION_AXIS = Axis("region", np.arange(len(REGIONS) + 1) - 0.5, "abcd_region", "ABCD region")
REGION_BINNING = Binning(REGION_AXIS, *W_BINNING.axes)


def _any_region(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.asarray(cols["abcd_region"]) >= 0


def _sv_regions(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    if "mu_sv" not in cols:
        raise KeyError("the W skim has no 'mu_sv' column (secondary-vertex match); rerun chapter 01")
    return (np.asarray(cols["abcd_region"]) >= 0) & np.asarray(cols["mu_sv"], bool)


@dataclass
class RegionRecipe:
    """The six ABCD regions × the W binning (a :class:`~wmnb.templatefit.templates.TemplateRecipe`)."""

    config: Any
    ref_mass_gev: float
    ref_width_gev: float
    sv_only: bool = False
    selection: str = "w"
    binning: Binning = REGION_BINNING
    signal: tuple[str, ...] = SIGNAL_SAMPLES
    required: tuple[str, ...] = ("mu_pt", "mu_eta", "mu_phi", "mu_charge", "mu_iso", "met_pt", "met_phi",
                                 "veto_pass")
    mass_step_mev: float = 100.0
    bb_scale: float = 1.25
    mass_merge: tuple[str, int] = ("eta", 4)
    poi_layouts: Mapping[str, Sequence[tuple[str, str]]] = field(default_factory=lambda: {"mass": [("mass", "signal")]})

    @property
    def final_cuts(self) -> Any:
        return _sv_regions if self.sv_only else _any_region

    def process_name(self, sample: str) -> str:
        return W_FIT_PROCESSES.get(sample, sample)

    def builtin_variations(self, cols: Mapping[str, np.ndarray], sample: str) -> Iterator[Variation]:
        return iter(())

    def mass_factors(self, cols: Mapping[str, np.ndarray], shift_mev: float, sample: str) -> np.ndarray:
        if "gen_mass" not in cols:
            raise KeyError(f"sample {sample!r}: skim column 'gen_mass' is missing (the mass templates need it)")
        return mass_weights(np.asarray(cols["gen_mass"]), self.ref_mass_gev, self.ref_width_gev,
                            self.ref_mass_gev + shift_mev * 1e-3)

    def builtin_sources(self) -> list[dict[str, Any]]:
        return []

    def region_mask(self, region: str) -> np.ndarray:
        """``"all"``, a region name of :data:`REGIONS` or ``"signal"`` (= ``pass_high``)."""
        r = SIGNAL if region == "signal" else region
        out = np.zeros(self.binning.shape, bool)
        if region == "all":
            out[...] = True
        elif r in REGIONS:
            out[REGIONS.index(r)] = True
        else:
            raise ValueError(f"unknown region {region!r}: use 'all', 'signal' or one of {list(REGIONS)}")
        return out

    def norms(self, process: str, source: str, float_norm: bool) -> list[tuple[str, float, str]]:
        """The W fit's normalisation priors (the names chapter 08 uses, so they are one nuisance)."""
        out: list[tuple[str, float, str]] = []
        if source == "simulation":
            out.append(("lumi", LUMI_KAPPA, "lumi"))
            if process in W_FIT_NORM_KAPPAS:
                out.append((f"norm_{process}", W_FIT_NORM_KAPPAS[process], "normalisation"))
        if process in W_PRODUCTION and not float_norm:
            out.append(("norm_wxsec", W_XSEC_KAPPA, "normalisation"))
        return out


def fill_nominal(recipe: RegionRecipe, cols: SampleInput, sample: str, corrections: Sequence[Any] = (),
                 is_data: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Nominal (sum of weights, sum of squared weights) of one sample in ``recipe``'s binning,
    through the correction pipeline (no variation is evaluated)."""
    chunks = [cols] if isinstance(cols, Mapping) else cols
    sumw = np.zeros(recipe.binning.shape)
    sumw2 = np.zeros(recipe.binning.shape)
    for chunk in chunks:
        sel, w, _ = select_events(recipe, chunk, sample, is_data=is_data, corrections=corrections)
        a, b = recipe.binning.fill(recipe.binning.bin_index(sel), w)
        sumw += a
        sumw2 += b
    return sumw, sumw2


__all__ = ["MULTIJET_SAMPLE", "PROMPT_SAMPLES", "REGION_BINNING", "RegionRecipe", "SIGNAL_SAMPLES", "fill_nominal"]
