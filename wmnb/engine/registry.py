"""The registry of event selections: what every consumer needs to know about a selection.

A selection is declared once, as a :class:`SelectionSpec`: the skim it reads, its muon prefixes,
how its hadronic recoil is defined, which quantities depend on the muon kinematics (recomputed
after a muon correction), the derived columns skims do not store, and its default final cuts.
The correction pipeline (:mod:`wmnb.engine.pipeline`), the histogram engine and the template
builders look selections up here instead of branching on their names, so a new chapter adds a
selection with :func:`register_selection` and edits no consumer.

>>> from wmnb.engine.registry import get_selection
>>> get_selection("z").muon_prefixes
('mup', 'mum')
>>> get_selection("zz")
Traceback (most recent call last):
...
ValueError: unknown selection 'zz'; registered selections: ['jpsi', 'tnp', 'upsilon', 'w', 'wlike', 'z']
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .kinematics import mt as _mt
from .kinematics import pair, project, to_ptphi, to_xy
from typing import Any

from .nanoaod import JPSI_TRIGGERS, SINGLE_MUON_TRIGGERS, UPSILON_TRIGGERS
from .selections import (FINAL_CUTS, ISO_MAX, W_CUTFLOW_STEPS, abcd_region, alt_met_derived, alt_recoil_vectors,
                         select_onia, select_tnp, select_w, select_z, wlike_derived, wlike_from_z_cutflow)

Columns = dict[str, np.ndarray]


@dataclass(frozen=True)
class SelectionSpec:
    """Everything consumers need about one selection.

    ``recoil(cols) -> (ut_x, ut_y) | None``: the hadronic recoil from the *uncorrected* skim
    (it excludes the muons, so a muon calibration does not change it); ``recoil_estimators(cols)
    -> {column: array}`` the same for the other MET estimators (``tkmet_ut_x`` ...,
    :func:`~wmnb.engine.selections.alt_recoil_vectors`).  ``derive(cols)``
    recomputes, in place, every column that depends on the muon kinematics (run after a muon
    correction); ``extras(cols)`` adds the derived columns a skim does not store (run when no
    muon moved).  ``final_cuts(cols) -> mask`` are the default final cuts.
    """

    name: str
    muon_prefixes: tuple[str, ...]
    final_cuts: Callable[[Columns], np.ndarray]
    derive: Callable[[Columns], None]
    recoil: Callable[[Columns], tuple[np.ndarray, np.ndarray] | None] | None = None
    extras: Callable[[Columns], None] | None = None
    description: str = ""
    #: NanoAOD level: ``skim(chunk, norm, gen) -> (columns, cutflow)``
    skim: Callable[..., tuple[Columns, dict[str, list[float]]]] | None = None
    #: the trigger paths the skim reads (at least one must exist in a file)
    triggers: tuple[str, ...] = ()
    #: single-muon stream: MET and electrons (vetoes) are read
    single_muon: bool = True
    #: LHE scale and PDF weights are read from simulation (W/Z production)
    lhe: bool = False
    #: the muon fields a reconstructed-level histogram of the selection needs besides the basics
    lean_muon_fields: tuple[str, ...] = ()
    #: the event number is read even for lean histograms (the W-like parity)
    lean_event: bool = False
    #: built from another selection's columns of the same chunk (``derive_from(cols, cutflow)``),
    #: reading that selection's branches: the W-like skim reuses the Z pair finding
    derived_from: str | None = None
    derive_from: Callable[[Columns, dict[str, list[float]]], tuple[Columns, dict[str, list[float]]]] | None = None
    #: the final cuts one by one for the cutflow table (default: one step, ``final_cuts``)
    cutflow_steps: tuple[tuple[str, Callable[[Columns], np.ndarray]], ...] | None = None
    #: the reversed-parity alternative of a W-like selection (swaps the roles of the muons in place)
    parity_swap: Callable[[Columns], None] | None = None
    #: the recoil of the other MET estimators (TkMET, PuppiMET) from the uncorrected skim
    recoil_estimators: Callable[[Columns], Columns] | None = None

    def run_skim(self, chunk: Any, norm: float = 1.0, gen: bool = True) -> tuple[Columns, dict[str, list[float]]]:
        """The skim of one NanoAOD chunk (columns, cutflow)."""
        if self.derived_from is not None and self.derive_from is not None:
            return self.derive_from(*get_selection(self.derived_from).run_skim(chunk, norm, gen))
        if self.skim is None:
            raise ValueError(f"selection {self.name!r} defines no skim")
        return self.skim(chunk, norm, gen)

    @property
    def branch_source(self) -> SelectionSpec:
        """The selection whose NanoAOD branches this one reads."""
        return get_selection(self.derived_from) if self.derived_from else self


_REGISTRY: dict[str, SelectionSpec] = {}


def register_selection(spec: SelectionSpec, *, replace: bool = False) -> SelectionSpec:
    """Add a selection (a chapter that defines a new one calls this at import time)."""
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"selection {spec.name!r} is already registered; pass replace=True to redefine it")
    _REGISTRY[spec.name] = spec
    return spec


def get_selection(name: str) -> SelectionSpec:
    """The registered selection ``name`` (a clear error listing the registered ones)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown selection {name!r}; registered selections: {sorted(_REGISTRY)}") from None


def registered_selections() -> tuple[str, ...]:
    """Names of every registered selection."""
    return tuple(_REGISTRY)


def swap_wlike_columns(cols: Columns) -> None:
    """Reversed W-like parity: exchange the ``mu_*`` and ``mu2_*`` columns in place."""
    for k in [k for k in cols if k.startswith("mu_")]:
        other = "mu2_" + k[3:]
        if other in cols:
            cols[k], cols[other] = cols[other], cols[k]
    cols["parity_odd"] = ~np.asarray(cols["parity_odd"], bool)


# --------------------------------------------------------------------------- the book's selections


def _dimuon_pair(cols: Columns, a: str, b: str) -> dict[str, np.ndarray]:
    return pair(cols[f"{a}_pt"], cols[f"{a}_eta"], cols[f"{a}_phi"], cols[f"{b}_pt"], cols[f"{b}_eta"], cols[f"{b}_phi"])


def _store_pair(cols: Columns, p: dict[str, np.ndarray]) -> None:
    cols["mass"], cols["pair_pt"], cols["pair_y"], cols["pair_phi"] = p["mass"], p["pt"], p["y"], p["phi"]


def _w_recoil(cols: Columns) -> tuple[np.ndarray, np.ndarray] | None:
    """u_T = −(MET + muon); in W-like skims MET already holds the second muon."""
    if "met_pt" not in cols:
        return None
    ex, ey = to_xy(cols["met_pt"], cols["met_phi"])
    mx, my = to_xy(cols["mu_pt"], cols["mu_phi"])
    return -(ex + mx), -(ey + my)


def _z_recoil(cols: Columns) -> tuple[np.ndarray, np.ndarray] | None:
    """u_T = −(MET + both muons)."""
    if "met_pt" not in cols:
        return None
    ex, ey = to_xy(cols["met_pt"], cols["met_phi"])
    px, py = to_xy(cols["mup_pt"], cols["mup_phi"])
    qx, qy = to_xy(cols["mum_pt"], cols["mum_phi"])
    return -(ex + px + qx), -(ey + py + qy)


def _w_alt_recoil(cols: Columns) -> Columns:
    """The other estimators' recoil u = -(MET + muon) (W-like: their MET holds the second muon)."""
    return alt_recoil_vectors(cols, ("mu",))


def _z_alt_recoil(cols: Columns) -> Columns:
    return alt_recoil_vectors(cols, ("mup", "mum"))


def _w_extras(cols: Columns) -> None:
    cols["iso_pass"] = np.asarray(cols["mu_iso"]) < ISO_MAX
    cols["abcd_region"] = abcd_region(cols)


def _w_derive(cols: Columns) -> None:
    ux, uy = cols["ut_x"], cols["ut_y"]
    mx, my = to_xy(cols["mu_pt"], cols["mu_phi"])
    met_pt, met_phi = to_ptphi(-(ux + mx), -(uy + my))
    cols["met_pt"], cols["met_phi"] = met_pt, met_phi
    cols["mt"] = _mt(cols["mu_pt"], cols["mu_phi"], met_pt, met_phi)
    cols["ut_para"], cols["ut_perp"] = project(ux, uy, np.asarray(cols["mu_phi"], np.float64))
    cols.update(alt_met_derived(cols, ("mu",), cols["mu_phi"]))
    _w_extras(cols)


def _wlike_derive(cols: Columns) -> None:
    cols.update(wlike_derived(cols))
    cols.update(alt_met_derived(cols, ("mu",), cols["mu_phi"]))
    _store_pair(cols, _dimuon_pair(cols, "mu", "mu2"))


def _onia_derive(cols: Columns) -> None:
    _store_pair(cols, _dimuon_pair(cols, "mup", "mum"))


def _z_derive(cols: Columns) -> None:
    p = _dimuon_pair(cols, "mup", "mum")
    _store_pair(cols, p)
    if "ut_x" in cols:
        ux, uy = cols["ut_x"], cols["ut_y"]
        px, py = to_xy(cols["mup_pt"], cols["mup_phi"])
        qx, qy = to_xy(cols["mum_pt"], cols["mum_phi"])
        cols["met_pt"], cols["met_phi"] = to_ptphi(-(ux + px + qx), -(uy + py + qy))
        cols["ut_para"], cols["ut_perp"] = project(ux, uy, p["phi"])
    cols.update(alt_met_derived(cols, ("mup", "mum"), p["phi"]))


def _tnp_derive(cols: Columns) -> None:
    p = pair(cols["tag_pt"], cols["tag_eta"], cols["tag_phi"], cols["probe_pt"], cols["probe_eta"], cols["probe_phi"])
    cols["mass"], cols["pair_pt"] = p["mass"], p["pt"]


_SINGLE_FIELDS = ("triggerMatch", "svMatched")

for _spec in (
    SelectionSpec("w", ("mu",), FINAL_CUTS["w"], _w_derive, _w_recoil, _w_extras,
                  "one muon, m_T and isolation regions: the m_W fit and the nonprompt ABCD",
                  skim=select_w, triggers=SINGLE_MUON_TRIGGERS, lhe=True, lean_muon_fields=_SINGLE_FIELDS,
                  cutflow_steps=W_CUTFLOW_STEPS, recoil_estimators=_w_alt_recoil),
    SelectionSpec("z", ("mup", "mum"), FINAL_CUTS["z"], _z_derive, _z_recoil, None,
                  "Z -> mumu pairs: calibration closure, recoil, dilepton fits",
                  skim=select_z, triggers=SINGLE_MUON_TRIGGERS, lhe=True, lean_muon_fields=_SINGLE_FIELDS,
                  lean_event=True, recoil_estimators=_z_alt_recoil),
    SelectionSpec("wlike", ("mu", "mu2"), FINAL_CUTS["wlike"], _wlike_derive, _w_recoil, None,
                  "Z -> mumu with one muon treated as a neutrino (the other is the template muon)",
                  derived_from="z", derive_from=wlike_from_z_cutflow,
                  cutflow_steps=(("W-like final", FINAL_CUTS["wlike"]),), parity_swap=swap_wlike_columns,
                  recoil_estimators=_w_alt_recoil),
    SelectionSpec("jpsi", ("mup", "mum"), FINAL_CUTS["jpsi"], _onia_derive, None, None,
                  "J/psi -> mumu: momentum scale calibration",
                  skim=lambda chunk, norm=1.0, gen=True: select_onia(chunk, norm, "jpsi", gen),
                  triggers=JPSI_TRIGGERS, single_muon=False, lean_muon_fields=("svMatched",)),
    SelectionSpec("upsilon", ("mup", "mum"), FINAL_CUTS["upsilon"], _onia_derive, None, None,
                  "Upsilon(1S) -> mumu: calibration cross-check",
                  skim=lambda chunk, norm=1.0, gen=True: select_onia(chunk, norm, "upsilon", gen),
                  triggers=UPSILON_TRIGGERS, single_muon=False, lean_muon_fields=("svMatched",)),
    SelectionSpec("tnp", ("tag", "probe"), FINAL_CUTS["tnp"], _tnp_derive, None, None,
                  "tag-and-probe Z pairs: efficiencies",
                  skim=select_tnp, triggers=SINGLE_MUON_TRIGGERS,
                  lean_muon_fields=("triggerMatch", "svMatched", "tightId", "isGlobal", "isTracker", "isStandalone")),
):
    register_selection(_spec)
