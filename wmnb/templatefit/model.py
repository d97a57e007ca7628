"""From templates to a fit model: one neutral specification, two fitters.

:func:`make_spec` turns a :class:`~wmnb.templatefit.templates.TemplateSet` into a :class:`ModelSpec`
(flat arrays over the bins in use, the list of shape and normalisation nuisances and the
parameters of interest).  The spec is then handed either to the project's TensorFlow fitter
(:func:`to_builder`, ``wmnb.fit.ModelBuilder``) or to the small independent reference fitter
(:mod:`wmnb.templatefit.reffit`).  A chapter's cross-checks are variants of the spec: the mass
POI split over regions (its recipe's ``poi_layouts``: one mass, charge, eta, ...; any number of
POIs), a sub-range of the bins, the signal normalisation floating.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any
from dataclasses import dataclass, field

import numpy as np

from .templates import TemplateSet, smoothed_mass_variation


@dataclass(frozen=True)
class SpecShape:
    """One shape nuisance on one process of a :class:`ModelSpec`.

    ``up``/``down`` are the varied yields on ``bins`` (indices into the spec's flat bins) and
    nominal elsewhere; ``bins=None``: over all bins.  Local variations stay sparse from the
    template builder to the fitter's sparse matrix.
    """

    name: str
    process: str
    up: np.ndarray
    down: np.ndarray | None
    group: str
    bins: np.ndarray | None = None

    def dense(self, nominal: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Full up and down yields over the spec's bins (``nominal``: this process's)."""
        if self.bins is None:
            return self.up, self.down
        up = nominal.copy()
        up[self.bins] = self.up
        if self.down is None:
            return up, None
        down = nominal.copy()
        down[self.bins] = self.down
        return up, down

    def logk(self, nominal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bins, symmetrised log-normal coefficient there): what the fitters use."""
        bins = np.arange(nominal.size) if self.bins is None else self.bins
        return bins, _sym_logk(nominal[bins], self.up, self.down)


@dataclass
class ModelSpec:
    """A binned model in flat arrays over the ``mask`` bins (order: C order over the binning)."""

    data: np.ndarray
    processes: list[str]
    nominal: np.ndarray                      # [P, B]
    sumw2: np.ndarray                        # [P, B]
    signal: list[str]
    mask: np.ndarray                         # bool SHAPE: bins in use
    shapes: list[SpecShape] = field(default_factory=list)
    norms: list[tuple[str, str, float, str]] = field(default_factory=list)
    pois: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    norm_pois: dict[str, list[str]] = field(default_factory=dict)
    bb_scale: float = 1.25
    mass_step_mev: float = 100.0
    #: nuisances of interest: constrained like any nuisance (their up/down templates are their
    #: ±1σ priors) but reported with the POIs (the helicity fit's cross sections)
    nois: list[str] = field(default_factory=list)
    _fit_model: object = field(default=None, init=False, repr=False, compare=False)  # see fitting._built

    @property
    def nuisances(self) -> list[str]:
        """Names of the constrained nuisance parameters (without the per-bin MC-stat ones)."""
        seen: dict[str, None] = {}
        for shape in self.shapes:
            seen.setdefault(shape.name, None)
        for name, *_ in self.norms:
            seen.setdefault(name, None)
        return list(seen)

    def groups(self) -> dict[str, str]:
        """Nuisance name -> impact group."""
        out = {s.name: s.group for s in self.shapes}
        out.update({n[0]: n[3] for n in self.norms})
        return out

    def expected(self, poi_values: dict[str, float] | None = None) -> np.ndarray:
        """Prediction with nuisances at zero and the given shape POIs (as the fitters interpolate)."""
        poi_values = poi_values or {}
        total = self.nominal.copy()
        for poi, per_proc in self.pois.items():
            theta = poi_values.get(poi, 0.0)
            for proc, (up, down) in per_proc.items():
                ip = self.processes.index(proc)
                nom = self.nominal[ip]
                total[ip] *= np.exp(theta * _sym_logk(nom, up, down) + theta**2 * _even_logk(nom, up, down))
        return total.sum(0)


def _sym_logk(nom: np.ndarray, up: np.ndarray, down: np.ndarray | None) -> np.ndarray:
    """Symmetrised log-normal coefficient ½(ln(up/nom) − ln(down/nom)); zero where undefined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        lu = np.log(up / nom)
        lk = lu if down is None else 0.5 * (lu - np.log(down / nom))
    return np.where(np.isfinite(lk), lk, 0.0)


def _even_logk(nom: np.ndarray, up: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Even part ½(ln(up/nom) + ln(down/nom)) of a template pair (the θ² term of a POI)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        lk = 0.5 * (np.log(up / nom) + np.log(down / nom))
    return np.where(np.isfinite(lk), lk, 0.0)


#: default of :func:`make_spec`'s ``asymmetry_split``: an even part above 10 % of the odd one
ASYMMETRY_SPLIT = 0.1
#: suffix of the nuisance carrying the even part of an asymmetric variation (as wmnb.fit names it)
EVEN_SUFFIX = "SymDiff"


def make_spec(ts: TemplateSet, data: np.ndarray | None = None, pois: str = "mass",
              region: str = "all", float_norm: bool = False, systematics: bool = True,
              mc_stat: bool = True, nois: Sequence[str] = (),
              asymmetry_split: float | None = ASYMMETRY_SPLIT) -> ModelSpec:
    """Build the model of the fit from templates.

    ``data`` replaces the observed histogram (Asimov or injected pseudo-data, the binning's
    shape); ``pois`` is a key of the recipe's ``poi_layouts``; ``region`` restricts the bins
    (the recipe's ``region_mask``); ``float_norm`` adds a free signal normalisation ``norm_w``;
    ``systematics=False`` keeps only the POIs (data-statistics-only fit); ``mc_stat=False``
    switches Barlow–Beeston-lite off.  ``nois`` names nuisances of interest, by nuisance or by
    group (every nuisance of a named group): constrained as usual, reported with the POIs.
    """
    recipe = ts.recipe
    if pois not in recipe.poi_layouts:
        raise ValueError(f"unknown POI layout {pois!r}; choose from {sorted(recipe.poi_layouts)}")
    obs = ts.data if data is None else np.asarray(data, dtype=np.float64).reshape(ts.binning.shape)
    # bins without any expected event carry no information on the model (and a likelihood
    # cannot be evaluated there): small samples leave a few at the acceptance edges
    in_region = recipe.region_mask(region)
    mask = in_region & (ts.prediction() > 0)
    lost = int(obs[in_region & ~mask].sum())
    if lost:
        warnings.warn(f"{lost} observed events fall in bins with zero expected yield and are not fitted; "
                      "the simulation is too small for this binning", stacklevel=2)
    names = list(ts.processes)
    spec = ModelSpec(
        data=obs[mask], processes=names,
        nominal=np.stack([ts.processes[p].nominal[mask] for p in names]),
        sumw2=np.stack([ts.processes[p].sumw2[mask] for p in names]),
        signal=ts.signal, mask=mask, bb_scale=recipe.bb_scale if mc_stat else 0.0,
        mass_step_mev=recipe.mass_step_mev,
    )
    mass_up, mass_down = smoothed_mass_variation(ts)
    for poi, poi_region in recipe.poi_layouts[pois]:
        sel = recipe.region_mask(poi_region)
        spec.pois[poi] = {}
        for p in ts.signal:
            nom = ts.processes[p].nominal
            up = np.where(sel, mass_up[p], nom)[mask]
            down = np.where(sel, mass_down[p], nom)[mask]
            if (sel & mask).any():
                spec.pois[poi][p] = (up, down)
        if not spec.pois[poi]:
            del spec.pois[poi]
    if float_norm:
        spec.norm_pois["norm_w"] = list(ts.signal)
    if not systematics:
        return spec
    # position of each binning bin among the fitted ones (-1: not fitted)
    position = np.full(mask.size, -1, np.int64)
    position[mask.ravel()] = np.arange(int(mask.sum()))
    for p in names:
        tmpl = ts.processes[p]
        flat_nominal = tmpl.nominal[mask]
        for nuis, shape in tmpl.shapes.items():
            if shape.bins is None:
                s = SpecShape(nuis, p, shape.up[mask], None if shape.down is None else shape.down[mask], shape.group)
            else:
                at = position[shape.bins]
                kept = at >= 0
                s = SpecShape(nuis, p, shape.up[kept], None if shape.down is None else shape.down[kept],
                              shape.group, at[kept])
            # a variation that leaves this process exactly at nominal (a W-only theory parameter on
            # the Z) is no nuisance of it; one that changes no process is no nuisance of the model
            if _changes(s, flat_nominal):
                spec.shapes.append(s)
        for name, kappa, group in recipe.norms(p, tmpl.source, float_norm):
            spec.norms.append((name, p, kappa, group))
    if asymmetry_split is not None:
        spec.shapes += _even_parts(spec, asymmetry_split)
    if nois:
        groups = spec.groups()
        unknown = [n for n in nois if n not in groups and n not in set(groups.values())]
        if unknown:
            raise KeyError(f"nuisances of interest {unknown} are neither nuisances nor groups of this model "
                           f"(groups: {sorted(set(groups.values()))})")
        spec.nois = [n for n in spec.nuisances if n in nois or groups[n] in nois]
    return spec


def _even_parts(spec: ModelSpec, threshold: float) -> list[SpecShape]:
    """The ``<name>SymDiff`` shapes of the asymmetric variations of ``spec`` (see :func:`make_spec`):
    a nuisance is split on every process it acts on if it is asymmetric on any of them."""
    even: list[tuple[SpecShape, np.ndarray, np.ndarray]] = []     # (shape, its nominal, even part)
    asymmetric: set[str] = set()
    for s in spec.shapes:
        if s.down is None:
            continue
        nom = spec.nominal[spec.processes.index(s.process)]
        bins, odd = s.logk(nom)
        e = _even_logk(nom[bins], s.up, s.down)
        if np.max(np.abs(e), initial=0.0) > threshold * np.max(np.abs(odd), initial=0.0) and np.any(e != 0):
            asymmetric.add(s.name)
        even.append((s, nom[bins], e))
    kept = sorted((x for x in even if x[0].name in asymmetric), key=lambda x: x[0].name)   # stable: process order kept
    return [SpecShape(s.name + EVEN_SUFFIX, s.process, nom * np.exp(e), None, s.group, s.bins) for s, nom, e in kept]


def _changes(shape: SpecShape, nominal: np.ndarray) -> bool:
    """Whether ``shape`` moves any bin of its process away from ``nominal`` (flat over the spec)."""
    nom = nominal if shape.bins is None else nominal[shape.bins]
    return not (np.array_equal(shape.up, nom) and (shape.down is None or np.array_equal(shape.down, nom)))


def to_builder(spec: ModelSpec) -> Any:
    """A ``wmnb.fit.ModelBuilder`` holding ``spec`` (flat 1-D arrays)."""
    try:
        from wmnb.fit import ModelBuilder
    except ImportError as err:
        raise ImportError(f"wmnb.fit is not available ({err}); use wmnb.templatefit.reffit for the reference fit") from err
    b = ModelBuilder(spec.data)
    for ip, p in enumerate(spec.processes):
        b.add_process(p, spec.nominal[ip], sumw2=spec.sumw2[ip], signal=p in spec.signal)
    for shape in spec.shapes:
        b.add_shape_systematic(shape.name, shape.process, shape.up, shape.down, group=shape.group, bins=shape.bins)
    for name, proc, kappa, group in spec.norms:
        b.add_norm_systematic(name, proc, kappa, group=group)
    for poi, per_proc in spec.pois.items():
        b.add_poi_shape(poi, list(per_proc), up={p: v[0] for p, v in per_proc.items()},
                        down={p: v[1] for p, v in per_proc.items()}, scale=spec.mass_step_mev)
    for poi, procs in spec.norm_pois.items():
        b.add_norm_poi(poi, procs)
    b.bb_scale = spec.bb_scale
    return b


def asimov(ts: TemplateSet, shift_mev: float | None = None) -> np.ndarray:
    """Pseudo-data equal to the nominal prediction, with the signal moved by ``shift_mev``
    through *exact* Breit–Wigner reweighting (the shift must be in ``ts.mass_scan``)."""
    total = ts.prediction()
    if shift_mev is None or shift_mev == 0:
        return total
    key = float(shift_mev)
    if key not in ts.mass_scan:
        raise KeyError(f"no exact template for a {shift_mev} MeV shift; build the templates with "
                       f"mass_shifts_mev including it (have {sorted(ts.mass_scan)})")
    for p, shifted in ts.mass_scan[key].items():
        total = total - ts.processes[p].nominal + shifted
    return total
