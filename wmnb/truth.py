"""The truth gate: the one place where analysis code may look at a truth card.

The universe chapter generates "data" from the ``data`` card and a closure set from the
``closure`` card; an analysis must never learn those cards, except to *compare* a measured value
with the truth it should recover (closure tests, "measured vs truth" panels).  This module is the
only reader of the cards outside ``wmnb.universe`` (a repository test enforces it), and every
read states why, so a reviewer can list them.  The data universe's W mass is blinded: the gate
refuses it until the analysis is unblinded.  The closure universe is the simulation with an
m_W of its own (a pure-detector closure), so its truths, m_W included, are not blinded.

The *simulation's* card (``nominal``) is not secret: it describes what the analysis's own
simulation was generated with, as a generator configuration would.

**Which data card.**  A profile may generate its data universe from a card of its own (the
top-level ``truth_card``, e.g. a blind challenge's secret card).  Every function here that reads
the data universe takes ``profile=``; without it, the profile of the chapter running now
(:func:`wmnb.paths.current_profile`: the runner's, or the one the notebook declared), and outside
any chapter the shipped ``data`` card.  For a profile the gate returns the card chapter 00
generated the data from (the copy it keeps next to its manifest,
:func:`wmnb.universe.recorded_data_card`) and refuses with :class:`TruthCardMismatch` when that is
not the card the profile names now.  The closure universe is always the shipped ``closure`` card.

>>> from wmnb import truth
>>> truth.simulation("physics.mw_mev") > 80000
True
>>> truth.compare("data", "physics.mw_mev", purpose="doctest")
Traceback (most recent call last):
...
wmnb.truth.BlindedTruth: the data universe's physics.mw_mev is blinded: it is shown only through the blinded m_W fit
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Literal

Universe = Literal["data", "closure"]
#: truths of the data universe that stay hidden while the measurement is blind
BLINDED = frozenset({"physics.mw_mev", "physics.mw_plus_mev", "physics.mw_minus_mev"})


class BlindedTruth(PermissionError):
    """The value asked for is the blinded result of the measurement."""


class TruthCardMismatch(RuntimeError):
    """A profile's universe was generated from another data card than the one it names now."""


@functools.lru_cache(maxsize=None)
def _card(name: str) -> dict[str, Any]:
    from .universe.card import load_card

    return load_card(name)


@functools.lru_cache(maxsize=16)
def _card_file(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    """A validated card file, read once per version of the file."""
    from .universe.card import load_card

    return load_card(path)


def _load(name_or_path: str) -> dict[str, Any]:
    from .universe.card import card_path

    path = card_path(name_or_path)
    st = path.stat()
    return _card_file(str(path), st.st_mtime_ns, st.st_size)


def profile_data_card(profile: str) -> tuple[dict[str, Any], str]:
    """The data card of ``profile``'s universe and the file it was read from: the copy chapter 00
    kept of the card it generated the data from, after checking that it is the card the profile
    names (``truth_card``, default the shipped ``data`` card); before chapter 00 has run, the
    named card itself.  :class:`TruthCardMismatch` when the universe was generated from another
    card (rerun chapter 00).  For the gate's own functions; analyses call :func:`compare`."""
    from .artefacts import read_json
    from .paths import universe_dir
    from .profiles import load_profile
    from .universe.card import card_hash

    prof = load_profile(profile)
    name = prof["name"]
    named = prof.get("truth_card") or "data"
    card = _load(named)
    root = universe_dir(name)
    if not (root / "manifest.json").is_file():
        return card, named
    manifest = read_json(root / "manifest.json")
    recorded = dict(manifest.get("cards") or {}).get("data")
    if recorded != card_hash(card):
        made_from = dict(manifest.get("data_card") or {}).get("source") or dict(manifest.get("card_names") or {}).get("data")
        raise TruthCardMismatch(
            f"profile {name!r} names the truth card {named} (its 'truth_card'), but its universe "
            f"{root} was generated from another data card ({made_from}): rerun chapter 00 "
            f"(`wmnb run --profile {name}`) before comparing with the truth")
    entry = manifest.get("data_card")
    if not isinstance(entry, dict) or "file" not in entry:  # made before the copy was kept: same hash
        return card, named
    copy_path = root / str(entry["file"])
    copy = _load(str(copy_path))
    if card_hash(copy) != recorded:
        raise TruthCardMismatch(f"{copy_path} does not hash to the data card recorded in {root / 'manifest.json'}: "
                                f"the universe was changed after its generation; rerun chapter 00 "
                                f"(`wmnb run --profile {name} --force --only 00_universe`)")
    return copy, str(copy_path)


def _universe_card(universe: str, profile: str | None) -> dict[str, Any]:
    """The card of the ``data`` universe (of ``profile``, see the module docstring) or of the
    ``closure`` one."""
    if universe != "data":
        return _card(universe)
    from .paths import current_profile

    profile = profile if profile is not None else current_profile()
    return _card("data") if profile is None else profile_data_card(profile)[0]


def _lookup(card: dict[str, Any], key: str, name: str) -> Any:
    node: Any = card
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"truth card {name!r} has no {key!r} (missing {part!r})")
        node = node[part]
    return node


def simulation(key: str) -> Any:
    """A value of the simulation's own card (``nominal``), e.g. ``"physics.mw_mev"``."""
    return _lookup(_card("nominal"), key, "nominal")


def compare(universe: Universe, key: str, *, purpose: str, unblinded: bool = False,
            profile: str | None = None) -> Any:
    """A truth of the ``data`` or ``closure`` universe, for comparing a measurement with it.

    ``purpose`` says what the comparison is (it is kept in :data:`READS` for the record).  The
    data universe's blinded values (:data:`BLINDED`) need ``unblinded=True``.  ``profile``: whose
    data universe (default: the running chapter's, else the shipped ``data`` card)."""
    if universe not in ("data", "closure"):
        raise ValueError(f"universe must be 'data' or 'closure', got {universe!r}")
    if not purpose:
        raise ValueError("say why the truth is read (purpose=...)")
    if universe == "data" and key in BLINDED and unblinded is not True:
        raise BlindedTruth(f"the data universe's {key} is blinded: it is shown only through the "
                           "blinded m_W fit")
    card = _universe_card(universe, profile)
    READS.append((universe, key, purpose))
    return _lookup(card, key, universe)


def efficiency_scale_factors(step: str, eta_edges: Any, pt_edges: Any, *, purpose: str,
                             universe: Universe = "data", charges: tuple[int, ...] = (-1, 1),
                             upar_edges: Any = None, probes: Mapping[str, Any] | None = None,
                             simulation_pileup: Universe | None = None, profile: str | None = None) -> Any:
    """The truth tag-and-probe efficiencies of ``step`` (``reco``, ``tracking``, ``id``,
    ``trigger``, ``isolation``) in the ``data`` (or ``closure``) universe and in the simulation,
    and their ratio, the truth scale factor, per (eta, pT, charge[, u_par]) bin: a
    :class:`wmnb.universe.efficiency.BinnedEfficiencies` (``eff_data``, ``eff_mc``, ``sf``).

    The efficiencies are the cards' efficiency functions (:mod:`wmnb.universe.efficiency`) for a
    prompt muon from a boson, at generator-level eta, pT, charge and u_par (the boson q_T projected
    on the muon, as the tnp skim's ``probe_gen_upar``), each the probability that a probe of the
    step (:data:`wmnb.conventions.TNP_STEPS`) passes it.  Per bin they are evaluated at the
    bin centres, or, given ``probes`` (generator-level ``eta``, ``pt``, ``charge``, ``upar`` of the
    simulated probes, optional ``pt_reco``, ``weight`` and ``bin_*`` values that decide the bins), averaged over
    each bin's probes: the quantity a tag-and-probe measurement in that bin estimates (see
    :func:`wmnb.universe.efficiency.binned_efficiencies`).  ``simulation_pileup``: the simulation's
    efficiencies at that universe's pileup (a simulation with pileup weights to it: the trigger
    and isolation efficiencies depend on pileup).  ``purpose`` is recorded in :data:`READS`;
    ``profile`` as in :func:`compare`."""
    if universe not in ("data", "closure"):
        raise ValueError(f"universe must be 'data' or 'closure', got {universe!r}")
    if simulation_pileup not in (None, "data", "closure"):
        raise ValueError(f"simulation_pileup must be None, 'data' or 'closure', got {simulation_pileup!r}")
    if not purpose:
        raise ValueError("say why the truth is read (purpose=...)")
    from .universe.efficiency import binned_efficiencies

    det_mc = _card("nominal")["detector"]
    if simulation_pileup is not None:
        det_mc = {**det_mc, "pileup": _universe_card(simulation_pileup, profile)["detector"]["pileup"]}
    out = binned_efficiencies(_universe_card(universe, profile)["detector"], det_mc, step, eta_edges, pt_edges,
                              charges=charges, upar_edges=upar_edges,
                              probes=dict(probes) if probes is not None else None)
    READS.append((universe, f"efficiency_scale_factors:{step}", purpose))
    return out


Source = Literal["data", "closure", "simulation"]


def _physics_for(source: str, purpose: str, profile: str | None = None) -> dict[str, Any]:
    """The ``physics`` block of a card for a theory comparison; the data universe's W mass and
    width are replaced by the simulation's, so nothing derived from it carries the blinded m_W."""
    if source not in ("data", "closure", "simulation"):
        raise ValueError(f"source must be 'data', 'closure' or 'simulation', got {source!r}")
    if not purpose:
        raise ValueError("say why the truth is read (purpose=...)")
    phys = dict((_card("nominal") if source == "simulation" else _universe_card(source, profile))["physics"])
    if source == "data":
        sim = _card("nominal")["physics"]
        phys["mw_mev"], phys["gw_mev"] = sim["mw_mev"], sim["gw_mev"]
    return phys


def qt_shape(source: Source, boson: str, qt_edges: Any, absy_edges: Any, *, purpose: str,
             profile: str | None = None) -> Any:
    """The true q_T fractions of ``boson`` (``wplus``, ``wminus``, ``z``) in (|y|, q_T) bins of
    a universe (rows: |y| bins, normalised to 1 each), the data's beyond-family q_T smearing
    included: :func:`wmnb.universe.theorychecks.qt_shape`.  ``purpose`` is recorded; ``profile``
    as in :func:`compare`."""
    import numpy as np

    from .universe.theorychecks import qt_shape as shape

    out = np.asarray(shape(_physics_for(source, purpose, profile), boson, np.asarray(qt_edges, float),
                           np.asarray(absy_edges, float)))
    READS.append((source, f"qt_shape:{boson}", purpose))
    return out / out.sum(axis=1, keepdims=True)


def angular_coefficients(source: Source, boson: str, qt: Any, y: Any, *, purpose: str,
                         profile: str | None = None) -> Any:
    """The true A0..A4 (shape (5, N)) of ``boson`` at generator-level (q_T, y) points of a
    universe (:func:`wmnb.universe.physics.angular_coefficients`, standard Collins-Soper frame).
    ``purpose`` is recorded; ``profile`` as in :func:`compare`."""
    import numpy as np

    from .universe import physics as ph

    tp = ph.theory_point(_physics_for(source, purpose, profile), boson)
    READS.append((source, f"angular_coefficients:{boson}", purpose))
    return ph.angular_coefficients(np.asarray(qt, float), np.asarray(y, float), tp)


def recoil_response(source: Source, qt: Any, y: Any, npv: Any, *, purpose: str,
                    profile: str | None = None) -> dict[str, Any]:
    """The PF recoil's true response R(q_T, y) (the mean of −u_∥ / q_T) and the core widths of
    u_∥ and u_⊥ (GeV, the Gaussian core without the tails) at boson (q_T, y) and vertex counts
    ``npv`` of a universe's detector (:mod:`wmnb.universe.recoil`): ``{"response", "sigma_par",
    "sigma_perp", "tail_fraction", "tail_width"}`` (the tails' extra width per component, added
    in quadrature to the calorimeter term), arrays like ``qt``.  ``purpose`` is recorded;
    ``profile`` as in :func:`compare`."""
    import numpy as np

    from .universe import recoil as rec

    if source not in ("data", "closure", "simulation"):
        raise ValueError(f"source must be 'data', 'closure' or 'simulation', got {source!r}")
    if not purpose:
        raise ValueError("say why the truth is read (purpose=...)")
    rc = (_card("nominal") if source == "simulation" else _universe_card(source, profile))["detector"]["recoil"]
    qt, y, npv = (np.asarray(a, float) for a in (qt, y, npv))
    s_par, s_perp = rec.core_sigmas(rc, qt, y, npv)
    READS.append((source, "recoil_response", purpose))
    return {"response": rec.response(rc, qt, y), "sigma_par": s_par, "sigma_perp": s_perp,
            "tail_fraction": rec.tail_fraction(rc, qt), "tail_width": rec.tail_width(rc, qt)}


def pdf_shift(source: Source, *, purpose: str, profile: str | None = None) -> Any:
    """The universe's position in PDF-eigenvector space (σ units; 0 for the simulation);
    ``profile`` as in :func:`compare`."""
    import numpy as np

    shift = np.asarray(_physics_for(source, purpose, profile)["pdf"]["shift"], float)
    READS.append((source, "pdf_shift", purpose))
    return shift


def data_component_skim(profile: str, process: str, selection: str, *, purpose: str,
                        universe: Universe = "data", progress: bool = False) -> dict[str, Any]:
    """The skim columns (chapter 01's ``selection``) of the events of one ``process`` inside a
    universe's data files: what a data-driven estimate of that process (the nonprompt
    background: ``process="qcd"``) should recover.  Data files do not say which process made an
    event; the universe regenerates those events exactly, from their own seeds, into a
    temporary folder (:func:`wmnb.universe.generate.regenerate_component`), and chapter 01's
    selection runs on them.  ``purpose`` is recorded in :data:`READS`."""
    import tempfile

    from .engine.skims import load_manifest, run_selections
    from .universe.generate import regenerate_component

    if universe not in ("data", "closure"):
        raise ValueError(f"universe must be 'data' or 'closure', got {universe!r}")
    if not purpose:
        raise ValueError("say why the truth is read (purpose=...)")
    manifest = load_manifest(profile)
    _, card = profile_data_card(profile)   # the card the data were generated from (its kept copy)
    with tempfile.TemporaryDirectory(prefix=f"wmnb-truth-{process}-") as tmp:
        files = regenerate_component(profile, manifest, process, tmp, sample_set=universe, truth=card)
        res = run_selections([str(f) for f in files], [selection], progress=progress,
                             desc=f"truth: {universe} {process}")
    READS.append((universe, f"data_component_skim:{process}:{selection}", purpose))
    return res[selection]["columns"]


#: (universe, key, purpose) of every read in this process, for the record
READS: list[tuple[str, str, str]] = []

__all__ = ["BLINDED", "BlindedTruth", "READS", "TruthCardMismatch", "angular_coefficients", "compare",
           "data_component_skim", "efficiency_scale_factors", "pdf_shift", "profile_data_card", "qt_shape",
           "recoil_response", "simulation"]
