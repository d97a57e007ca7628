"""The published muon-efficiency correction (weight kind): scale factors on prompt simulation.

Applied to every prompt-muon simulation (W, Z, τ, top, diboson; not the multijet sample) in the
W, Z and W-like selections, reading the correctionlib file of chapter 03 through correctionlib:

* every selected muon gets the reco, tracking and ID scale factors at its (eta, pT, charge) and
  u_∥ = the generator boson q_T projected on the muon (0 without a boson);
* the trigger: the W's muon and the W-like template muon (the ones required to trigger); a
  dimuon Z event (either muon may trigger) gets [1 − Π(1 − SF_i ε_i)] / [1 − Π(1 − ε_i)] with the
  simulation's trigger efficiencies ε_i;
* the isolation: measured on triggering probes for the muon that must trigger (W, the W-like
  template muon), without the trigger requirement (``isolation_notrig``) for the W-like's second
  muon and the two muons of a dimuon event (:data:`STEPS_OF`).  A W event whose muon *fails*
  the isolation (``mu_iso`` >= 0.15: the nonprompt chapter's isolation-failing sidebands) gets
  the failing-probe factor (1 − SF ε)/(1 − ε) with the simulation's isolation efficiency ε
  (capped at 0.9995) instead, so its variations move opposite to the passing events';
* the second-muon veto of the W selection: an event whose boson's other decay lepton is a muon
  (generator level, pT > 15 GeV, |eta| < 2.4; the Z → μμ background) and that passed the veto
  gets the failing-probe factor (1 − SF ε)/(1 − ε) of the loose ID at that generator muon
  (ε the simulation's loose-ID efficiency of a muon with a track, capped at 0.9995).  The inner
  track's own reconstruction is not a measured step: it is taken as the simulation's.

Variations (group ``muonEfficiency``), each local to the events it touches:

* ``eff_stat_<step>_eta<i>[_q<p|m>]_<k>``: eigenvector k of slice (eta bin i, charge), ±;
* ``eff_syst_<step>_<model>_corr`` and ``..._eta<i>``: the alternative fit model's scale factor
  (alternative − nominal), once correlated across eta and once per eta bin, each with half the
  variance (so the total per bin is the difference);
* ``prefire`` (group ``prefire``): the simulation's L1 prefiring weight ± its uncertainty.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from ..corrections import Correction, Manifest, SampleInfo, Variation, publish
from ..conventions import ISO_MAX
from .binning import STEPS
from .scalefactors import EFF_CAP, failing_scale_factor
from .tables import ARTEFACT, EfficiencyTables, load_tables

CORRECTION_NAME = "muon_efficiency"
CHAPTER = "03_efficiencies"
GROUP = "muonEfficiency"
PREFIRE_GROUP = "prefire"
#: simulated samples with prompt muons (the multijet sample's muons are nonprompt)
PROMPT_SAMPLES = ("wplus_munu", "wminus_munu", "z_mumu", "w_taunu", "z_tautau", "ttbar", "diboson")
SELECTIONS = ("w", "z", "wlike")
#: the pseudo-muon of the veto factor: the W event's generator-level second muon
VETO_PREFIX = "lep2"
#: generator-level cuts of a second muon the veto could have found (the veto's pT and the muon
#: acceptance)
VETO_PT, VETO_ETA = 15.0, 2.4
_TRIGGERING = ("reco", "tracking", "id", "trigger", "isolation")
_SECOND = ("reco", "tracking", "id", "isolation_notrig")
#: per selection: the steps whose event factor needs the simulation's efficiency (a dimuon
#: event's either-muon trigger, the veto's failing probe)
EFFICIENCY_STEPS = {"z": ("trigger",), "w": ("veto", "isolation")}
#: per selection: the muon whose isolation decides between the passing and the failing
#: isolation factor (the W's isolation-failing sidebands)
ISOLATION_FAILING = {"w": "mu"}
#: per selection and muon prefix: the steps whose scale factors the muon carries (a dimuon
#: event's trigger is the event-level "either muon" formula)
STEPS_OF: dict[str, dict[str, tuple[str, ...]]] = {
    "w": {"mu": _TRIGGERING, VETO_PREFIX: ("veto",)},
    "wlike": {"mu": _TRIGGERING, "mu2": _SECOND},
    "z": {"mup": (*_SECOND, "trigger"), "mum": (*_SECOND, "trigger")},
}
HALF = np.sqrt(0.5)


def _upar(columns: Mapping[str, np.ndarray], prefix: str) -> np.ndarray:
    qt = np.nan_to_num(np.asarray(columns.get("gen_qt", np.zeros(1)), np.float64))
    phi = np.nan_to_num(np.asarray(columns.get("gen_phi", np.zeros(1)), np.float64))
    mphi = np.asarray(columns[f"{prefix}_phi"], np.float64)
    return np.broadcast_to(qt * np.cos(phi - mphi), mphi.shape)


class MuonEfficiencyCorrection(Correction):
    """Scale factors, their eigen- and model variations, and the prefiring nuisance."""

    name = CORRECTION_NAME
    kinds = ("weight",)

    def __init__(self, tables: EfficiencyTables):
        self.tables = tables

    def applies_to(self, sample: SampleInfo) -> bool:
        return not sample.is_data and sample.name in PROMPT_SAMPLES and sample.selection in SELECTIONS

    # -------------------------------------------------------------- per-muon inputs
    def _muons(self, columns: Mapping[str, np.ndarray], sample: SampleInfo) -> dict[str, dict[str, np.ndarray]]:
        out = {}
        for p in sample.muon_prefixes:
            missing = [f"{p}_{k}" for k in ("eta", "pt", "charge", "phi") if f"{p}_{k}" not in columns]
            if missing:
                raise KeyError(f"{CORRECTION_NAME}: sample {sample.name!r} (selection {sample.selection!r}) lacks "
                               f"the columns {missing}; rerun chapter 01")
            out[p] = {"eta": np.asarray(columns[f"{p}_eta"], np.float64), "pt": np.asarray(columns[f"{p}_pt"], np.float64),
                      "charge": np.asarray(columns[f"{p}_charge"], np.int64), "upar": _upar(columns, p)}
        if VETO_PREFIX in STEPS_OF[sample.selection]:
            out[VETO_PREFIX] = self._veto_muon(columns, sample)
        iso_muon = ISOLATION_FAILING.get(sample.selection)
        if iso_muon is not None and iso_muon in out:
            if f"{iso_muon}_iso" not in columns:
                raise KeyError(f"{CORRECTION_NAME}: sample {sample.name!r} (selection {sample.selection!r}) lacks "
                               f"{iso_muon}_iso (the failing-isolation factor needs it); rerun chapter 01")
            out[iso_muon]["iso_fail"] = np.asarray(columns[f"{iso_muon}_iso"], np.float64) >= ISO_MAX
        return self._with_efficiencies(out, sample)

    def _with_efficiencies(self, muons: dict[str, dict[str, np.ndarray]], sample: SampleInfo
                           ) -> dict[str, dict[str, np.ndarray]]:
        """``muons`` with the simulation's efficiencies (``eff_<step>``, capped) that event factors
        need, looked up once (a variation evaluates the factor three times)."""
        for step in EFFICIENCY_STEPS.get(sample.selection, ()):
            for p in self._users(step, sample, muons):
                mu = muons[p]
                if step == "isolation":
                    # only the failing muons need it (few): the others keep a placeholder
                    fail = mu.get("iso_fail")
                    eff = np.full(mu["pt"].size, 0.5)
                    if fail is not None and fail.any():
                        eff[fail] = self.tables.eff_mc(step, mu["eta"][fail], mu["pt"][fail], mu["charge"][fail],
                                                       mu["upar"][fail])
                    mu["eff_isolation"] = np.minimum(eff, EFF_CAP)
                    continue
                mu[f"eff_{step}"] = np.minimum(self.tables.eff_mc(step, mu["eta"], mu["pt"], mu["charge"], mu["upar"]), EFF_CAP)
        return muons

    @staticmethod
    def _veto_muon(columns: Mapping[str, np.ndarray], sample: SampleInfo) -> dict[str, np.ndarray]:
        """The generator-level second muon of each event (``lep2_gen_*``) with ``active``: a muon
        in the veto's reach in an event that passed the veto; elsewhere placeholder kinematics."""
        need = ["lep2_gen_pt", "lep2_gen_eta", "lep2_gen_pdgid"]
        missing = [k for k in need if k not in columns]
        if missing:
            raise KeyError(f"{CORRECTION_NAME}: sample {sample.name!r} (selection {sample.selection!r}) lacks "
                           f"the columns {missing} (the veto factor's second muon); rerun chapter 01")
        pt = np.asarray(columns["lep2_gen_pt"], np.float64)
        eta = np.asarray(columns["lep2_gen_eta"], np.float64)
        pdg = np.asarray(columns["lep2_gen_pdgid"], np.int64)
        active = (np.abs(pdg) == 13) & np.isfinite(pt) & np.isfinite(eta) & (pt > VETO_PT) & (np.abs(eta) < VETO_ETA)
        if "veto_pass" in columns:
            active &= np.asarray(columns["veto_pass"], bool)
        return {"eta": np.where(active, eta, 0.0), "pt": np.where(active, pt, 30.0),
                "charge": np.where(pdg > 0, -1, 1).astype(np.int64), "upar": np.zeros(pt.size), "active": active}

    def _sf(self, step: str, mu: Mapping[str, np.ndarray], variation: str = "nominal") -> np.ndarray:
        return self.tables.sf(step, mu["eta"], mu["pt"], mu["charge"], mu["upar"], variation)

    def _step_factor(self, step: str, sample: SampleInfo, sfs: Mapping[str, np.ndarray],
                     muons: Mapping[str, Mapping[str, np.ndarray]]) -> np.ndarray:
        """The event factor of one step from the per-muon scale factors ``sfs`` (prefix → SF)."""
        if step == "veto":
            out = np.ones(next(iter(sfs.values())).size)
            for p in sfs:
                mu = muons[p]
                out = out * np.where(mu["active"], failing_scale_factor(sfs[p], mu["eff_veto"]), 1.0)
            return out
        if step == "isolation":
            return np.prod([np.where(muons[p]["iso_fail"], failing_scale_factor(sfs[p], muons[p]["eff_isolation"]),
                                     sfs[p]) if "iso_fail" in muons[p] else sfs[p] for p in sfs], axis=0)
        if step != "trigger" or sample.selection != "z":
            return np.prod([sfs[p] for p in sfs], axis=0)
        num: np.ndarray | float = 1.0
        den: np.ndarray | float = 1.0
        for p in sfs:
            e = muons[p]["eff_trigger"]
            num = num * (1.0 - np.minimum(sfs[p] * e, EFF_CAP))
            den = den * (1.0 - e)
        return np.asarray((1.0 - num) / (1.0 - den))

    @staticmethod
    def _users(step: str, sample: SampleInfo, muons: Mapping[str, object]) -> list[str]:
        """The muon prefixes that carry ``step``'s scale factor in this selection."""
        return [p for p in muons if step in STEPS_OF[sample.selection].get(p, ())]

    def _nominal_sfs(self, muons: Mapping[str, Mapping[str, np.ndarray]], sample: SampleInfo
                     ) -> dict[str, dict[str, np.ndarray]]:
        return {step: {p: self._sf(step, muons[p]) for p in self._users(step, sample, muons)} for step in STEPS}

    def nominal_factor(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> np.ndarray | None:
        muons = self._muons(columns, sample)
        sfs = self._nominal_sfs(muons, sample)
        n = next(iter(muons.values()))["pt"].size
        out = np.ones(n)
        for s in STEPS:
            if sfs[s]:
                out = out * self._step_factor(s, sample, sfs[s], muons)
        return out

    # -------------------------------------------------------------- variations
    def _varied(self, step: str, sample: SampleInfo, muons: Mapping[str, Mapping[str, np.ndarray]],
                nominal: Mapping[str, np.ndarray], rows: np.ndarray, select: Mapping[str, np.ndarray],
                variation: str, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """(up, down) factors relative to nominal on ``rows``: the muons flagged in ``select``
        (prefix → bool over all events) take ``nominal + scale (variation − nominal)``."""
        sub = {p: {k: v[rows] for k, v in mu.items()} for p, mu in muons.items()}
        nom = {p: nominal[p][rows] for p in nominal}
        ups, downs = {}, {}
        for p, mu in sub.items():
            s = select[p][rows]
            shift = np.zeros(rows.size)
            if s.any():
                shift[s] = scale * (self._sf(step, {k: v[s] for k, v in mu.items()}, variation) - nom[p][s])
            ups[p], downs[p] = nom[p] + shift, nom[p] - shift
        base = self._step_factor(step, sample, nom, sub)
        with np.errstate(divide="ignore", invalid="ignore"):
            up = np.where(base != 0, self._step_factor(step, sample, ups, sub) / base, 1.0)
            down = np.where(base != 0, self._step_factor(step, sample, downs, sub) / base, 1.0)
        return up, down

    def _local(self, step: str, sample: SampleInfo, mu: Mapping[str, Mapping[str, np.ndarray]],
               nom: Mapping[str, np.ndarray], sel: Mapping[str, np.ndarray], name: str, variation: str,
               scale: float) -> Variation:
        """A variation on the events whose muons flagged in ``sel`` it touches (none: empty)."""
        rows = np.flatnonzero(np.any([sel[p] for p in mu], axis=0))
        if rows.size == 0:
            return Variation(name, GROUP, np.ones(0), np.ones(0), rows)
        up, down = self._varied(step, sample, mu, nom, rows, sel, variation, scale)
        return Variation(name, GROUP, up, down, rows)

    def iter_variations(self, columns: dict[str, np.ndarray], sample: SampleInfo) -> Iterator[Variation]:
        muons = self._muons(columns, sample)
        sfs = self._nominal_sfs(muons, sample)
        n = next(iter(muons.values()))["pt"].size if muons else 0
        for step in STEPS:
            t = self.tables.steps[step]
            used = self._users(step, sample, muons)
            if not used:            # a step this selection's muons never carry (the same for every sample)
                continue
            mu = {p: muons[p] for p in used}
            nom = {p: sfs[step][p] for p in used}
            ieta = {p: np.clip(np.searchsorted(t.eta_edges, mu[p]["eta"], side="right") - 1, 0, t.eta_edges.size - 2)
                    for p in used}
            active = {p: mu[p].get("active", np.ones(n, bool)) for p in used}

            # eigen-variations per slice
            for ie in range(t.eta_edges.size - 1):
                for q in ((-1, 1) if t.charged else (0,)):
                    sel = {p: (ieta[p] == ie) & ((mu[p]["charge"] == q) if t.charged else True) & active[p] for p in used}
                    tag = f"{step}_eta{ie}" + (f"_q{'p' if q > 0 else 'm'}" if t.charged else "")
                    for k in range(t.n_stat):
                        yield self._local(step, sample, mu, nom, sel, f"eff_stat_{tag}_{k}", f"stat{k}", 1.0)
            # the alternative models: correlated and per eta bin, each with half the variance
            for model in t.alternatives:
                yield self._local(step, sample, mu, nom, active, f"eff_syst_{step}_{model}_corr", model, HALF)
                for ie in range(t.eta_edges.size - 1):
                    yield self._local(step, sample, mu, nom, {p: (ieta[p] == ie) & active[p] for p in used},
                                      f"eff_syst_{step}_{model}_eta{ie}", model, HALF)
        if "prefire_up" in columns:
            yield Variation("prefire", PREFIRE_GROUP, np.asarray(columns["prefire_up"], np.float64),
                            np.asarray(columns["prefire_dn"], np.float64))

    def nuisance_counts(self, selection: str | None = None) -> dict[str, int]:
        """Nuisances per kind (stat per step, syst per step, prefire) this correction declares
        (for the steps that ``selection``'s muons carry, if given)."""
        out: dict[str, int] = {}
        for step, t in self.tables.steps.items():
            if selection is not None and not any(step in steps for steps in STEPS_OF[selection].values()):
                continue
            n_eta = t.eta_edges.size - 1
            out[f"stat_{step}"] = n_eta * (2 if t.charged else 1) * t.n_stat
            out[f"syst_{step}"] = len(t.alternatives) * (1 + n_eta)
        out["prefire"] = 1
        return out


def load_correction(artefact: str | Path) -> MuonEfficiencyCorrection:
    """Factory named in the published manifest."""
    return MuonEfficiencyCorrection(load_tables(artefact))


def publish_correction(chapter_dir: str | Path) -> Path:
    """Publish the correctionlib artefact (written first by :func:`wmnb.efficiency.tables.write_tables`)."""
    return publish(chapter_dir, Manifest(
        name=CORRECTION_NAME, chapter=CHAPTER, kinds=("weight",), factory="wmnb.efficiency.correction:load_correction",
        artefact=ARTEFACT, order=20, groups=(GROUP, PREFIRE_GROUP),
        description="tag-and-probe muon efficiency scale factors (reco, tracking, ID, trigger, isolation) with "
                    "eigen-variations and fit-model systematics; L1 prefiring uncertainty"))


__all__ = ["CORRECTION_NAME", "GROUP", "PROMPT_SAMPLES", "MuonEfficiencyCorrection", "load_correction",
           "publish_correction"]
