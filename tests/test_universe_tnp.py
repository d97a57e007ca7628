"""Tag and probe that can fail: backgrounds under the Z peak and pT-dependent efficiencies.

Every single-muon process is generated with the shipped cards, reconstructed, written as
NanoAOD-like files and paired by chapter 01's own ``tnp`` selection
(:func:`wmnb.engine.selections.select_tnp`); the steps and their probes are
:data:`wmnb.conventions.TNP_STEPS`.  Yields are weighted by cross section / produced events.
The truth efficiencies are :mod:`wmnb.universe.efficiency` (through :mod:`wmnb.truth` for the
data card).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

from wmnb import truth
from wmnb.conventions import TNP_STEPS, tnp_step_masks
from wmnb.engine.nanoaod import load_chunk, open_tree, plan_chunks, selection_branches
from wmnb.engine.selections import select_tnp
from wmnb.engine.skims import concat_columns
from wmnb.universe import efficiency as E
from wmnb.universe import kinematics as kin
from wmnb.universe import load_card
from wmnb.universe import validation as V
from wmnb.universe.card import eta_bin
from wmnb.universe.detector import simulate
from wmnb.universe.processes import GENERATORS

from generated_nanoaod import write_generated

#: produced events per process (~1/40 of the default profile's data for the electroweak
#: processes, enough multijet events for their share of the tags)
PRODUCED = {"wplus_munu": 240_000, "wminus_munu": 180_000, "z_mumu": 150_000, "w_taunu": 40_000,
            "z_tautau": 20_000, "ttbar": 10_000, "diboson": 5_000, "qcd": 400_000}
#: the failing-probe background fraction under the Z peak that each step must have (the paper:
#: "large" for reco and tracking; the old universe had 1-2 % everywhere but isolation)
FAIL_BKG_RANGE = {"reco": (0.15, 0.60), "tracking": (0.05, 0.40), "id": (0.025, 0.15)}
OLD_MAX = 0.03


def engine_pairs(files, norm=1.0, same_sign=False, max_events=None):
    """Chapter 01's own tnp pairs (wmnb.engine.selections.select_tnp) of ``files``."""
    parts = []
    for f in files:
        tree = open_tree(f)
        available = set(tree.keys())
        req, opt = selection_branches("tnp", available, "genWeight" in available, str(f))
        for path, start, stop in plan_chunks(f, 200_000):
            chunk = load_chunk(path, start, stop, req, optional=opt, tree=tree)
            parts.append(select_tnp(chunk, norm, gen=True, same_sign=same_sign)[0])
    return concat_columns(parts)


def _write(tmp, card, process: str, n: int, seed: int, tag: str) -> list:
    # the tnp skim needs the single-muon trigger
    path = write_generated(tmp / f"{tag}_{process}.root", card, process, n, seed, is_data=False, drop_prefired=False)
    return [path]


def _samples(tmp, card, tag: str, processes=PRODUCED) -> dict:
    return {p: (_write(tmp, card, p, n, 900 + 10 * i, tag), card["physics"]["xsec_pb"][p] / n)
            for i, (p, n) in enumerate(PRODUCED.items()) if p in processes}


@pytest.fixture(scope="module")
def simulation(tmp_path_factory):
    """The single-muon processes of the simulation (nominal card), and the same events without
    fake muon candidates (the old universe's tag-and-probe sample)."""
    card = load_card("nominal")
    tmp = tmp_path_factory.mktemp("tnp_nominal")
    old = copy.deepcopy(card)
    old["detector"]["fake_muons"]["rate"] = 0.0
    return {"new": _samples(tmp, card, "new"), "old": _samples(tmp, old, "old")}


@pytest.fixture(scope="module")
def fractions(simulation):
    return {k: V.tnp_background(v, pairs=engine_pairs) for k, v in simulation.items()}


def test_failing_probes_carry_a_realistic_background(fractions):
    """The failing probes of the reconstruction and tracking steps under the Z peak are several
    to tens of per cent background (fake muon candidates paired with a tag from W+jets, multijet
    and other events), the ID step's a few per cent, the passing probes much less.  Protects
    against a tag and probe that cannot fail: the same events without fakes (the old universe)
    have under 3 % in the reco and tracking steps."""
    new, old = fractions["new"], fractions["old"]
    for step, (lo, hi) in FAIL_BKG_RANGE.items():
        f = new[step]["fail_bkg_fraction"]
        assert lo < f < hi, (step, f)
        assert new[step]["n_fail_bkg"] > 40, step                    # measured, not 0/x
        assert new[step]["pass_bkg_fraction"] < 0.5 * f, step        # smaller among passing probes
        assert new[step]["pass_bkg_fraction"] < 0.05, step
    for step in ("reco", "tracking"):
        assert old[step]["fail_bkg_fraction"] < OLD_MAX, (step, old[step]["fail_bkg_fraction"])
    # trigger and isolation probes pass the ID: fakes hardly reach them (top/diboson remain)
    assert new["trigger"]["fail_bkg_fraction"] < 0.1
    assert new["isolation"]["fail_bkg_fraction"] < 0.3


def test_chapter00_pairs_are_chapter01s(simulation, fractions):
    """Chapter 00's minimal tag-and-probe pairing (which runs without the engine) gives the very
    pairs, flags and weights of chapter 01's tnp skim, same- and opposite-sign, so its headline
    tnp_fail_bkg_fraction is chapter 01's."""
    keys = ("event", "tag_pt", "probe_pt", "probe_charge", "probe_pass_sta", "probe_pass_glb", "probe_pass_trk",
            "probe_pass_id", "probe_pass_trig", "probe_pass_iso")
    for p in ("wplus_munu", "z_mumu", "qcd"):
        files, w = simulation["new"][p]
        for same_sign in (False, True):
            mine, ref = V.tnp_pairs(files, w, same_sign), engine_pairs(files, w, same_sign)
            assert mine["mass"].size == ref["mass"].size > 0, p

            def rows(c):
                return sorted(zip(*(np.asarray(c[k], np.float32).tolist() for k in keys)))
            assert rows(mine) == rows(ref), p
            np.testing.assert_allclose(np.sort(mine["mass"]), np.sort(ref["mass"]), rtol=1e-5)
            np.testing.assert_allclose(np.sort(mine["weight"]), np.sort(ref["weight"]), rtol=1e-6)
            np.testing.assert_array_equal(np.sort(np.isfinite(mine["probe_gen_pt"])), np.sort(np.isfinite(ref["probe_gen_pt"])))
    mine = V.tnp_background(simulation["new"])
    for step, v in fractions["new"].items():
        assert mine[step]["fail_bkg_fraction"] == pytest.approx(v["fail_bkg_fraction"], rel=1e-6), step


def test_background_falls_with_mass_and_comes_from_several_processes(simulation):
    """The fake-probe background of the failing reco probes falls with m_mumu in 50-130 GeV
    (larger at low mass) and comes from W+jets and multijet events as well as Z+jets."""
    edges = np.array([50.0, 70.0, 90.0, 110.0, 130.0])
    hist = np.zeros(edges.size - 1)
    by_process = {}
    for p, (files, w) in simulation["new"].items():
        c = engine_pairs(files, w)
        probe, passed = tnp_step_masks(c, "reco")
        fake = probe & ~passed & ~np.isfinite(c["probe_gen_pt"])
        h, _ = np.histogram(c["mass"][fake], bins=edges, weights=c["weight"][fake])
        hist += h
        by_process[p] = h.sum()
    assert np.all(np.diff(hist) < 0), hist
    assert hist[0] > 2 * hist[-1], hist
    total = sum(by_process.values())
    w_jets = (by_process["wplus_munu"] + by_process["wminus_munu"]) / total
    assert 0.15 < w_jets < 0.8 and by_process["qcd"] / total > 0.1 and by_process["z_mumu"] > 0, by_process


def test_background_pairs_are_charge_uncorrelated(simulation):
    """Fake probes have a charge unrelated to the tag's: same-sign pairs are as frequent as
    opposite-sign ones in the failing reco and tracking probes.  The old universe (no fakes) had
    essentially no same-sign failing reco probes."""
    for step in ("reco", "tracking"):
        os_ = V.tnp_background(simulation["new"], pairs=engine_pairs)[step]
        ss = V.tnp_background(simulation["new"], same_sign=True, pairs=engine_pairs)[step]
        assert ss["n_fail_bkg"] > 40, step
        ratio = ss["fail_bkg"] / os_["fail_bkg"]
        err = np.sqrt(1 / ss["n_fail_bkg"] + 1 / os_["n_fail_bkg"])
        assert abs(ratio - 1) < max(4 * err, 0.15), (step, ratio, err)
    old_ss = V.tnp_background(simulation["old"], same_sign=True, pairs=engine_pairs)["reco"]
    assert old_ss["n_fail_bkg"] < 5


@pytest.fixture(scope="module")
def z_probes(tmp_path_factory):
    """Real (generator-matched) Z probes of the simulation and of the data card."""
    out = {}
    tmp = tmp_path_factory.mktemp("tnp_z")
    for name in ("nominal", "data"):
        card = load_card(name)
        files = _write(tmp, card, "z_mumu", 400_000, 31, name)
        c = engine_pairs(files)
        real = np.isfinite(c["probe_gen_pt"])
        out[name] = ({k: v[real] for k, v in c.items()}, card["detector"])
    return out


PT_EDGES = np.array([24.0, 26.0, 28.0, 30.0, 33.0, 36.0, 40.0, 44.0, 48.0, 55.0, 65.0])


def _pass_fractions(cols, det, step, edges=PT_EDGES, var="probe_pt"):
    """Measured pass fraction per bin of ``var``, the probe-averaged truth and the binomial error."""
    probe, passed = tnp_step_masks(cols, step)
    eff = E.truth_efficiency(det, step, cols["probe_gen_eta"][probe], cols["probe_gen_pt"][probe],
                             cols["probe_charge"][probe], cols["probe_gen_upar"][probe], cols["probe_pt"][probe])
    idx = np.digitize(cols[var][probe], edges) - 1
    ok = (idx >= 0) & (idx < edges.size - 1)
    n = np.bincount(idx[ok], minlength=edges.size - 1)
    k = np.bincount(idx[ok], passed[probe][ok], minlength=edges.size - 1)
    e = np.bincount(idx[ok], eff[ok], minlength=edges.size - 1) / n
    return k / n, e, np.sqrt(e * (1 - e) / n)


@pytest.mark.parametrize("card", ["nominal", "data"])
def test_generated_pass_fractions_follow_the_card(z_probes, card):
    """The pass fraction of real probes in pT bins follows the card's truth efficiency of each
    step within statistics (chi2/ndf), for the simulation and the data card; where the truth
    moves with pT by many standard errors, a flat efficiency is excluded.  Protects against a generator
    that does not do what the card (and hence the truth gate) says.  The tracking step is binned
    in generator pT (its failing probes without a track carry the standalone pT); the isolation
    is slightly more efficient in the tag-and-probe sample than the truth (the tag's isolation
    prefers events with less pileup, which the probe shares), hence its looser bound."""
    cols, det = z_probes[card]
    for step in E.STEPS:
        var = "probe_gen_pt" if step == "tracking" else "probe_pt"
        meas, expect, err = _pass_fractions(cols, det, step, var=var)
        chi2 = np.mean(((meas - expect) / err) ** 2)
        assert chi2 < (3.0 if step == "isolation" else 2.2), (card, step, chi2, meas - expect)
        # where the truth moves by many standard errors across the bins, so do the events
        if np.mean(((expect - np.average(expect, weights=1 / err**2)) / err) ** 2) > 9:
            flat = np.average(meas, weights=1 / err**2)
            assert np.mean(((meas - flat) / err) ** 2) > 3 * max(chi2, 1), (card, step)


def _shape(s, ib, pt):
    """The card's pT shape written out independently of wmnb.universe.efficiency."""
    return (1 - np.asarray(s["depth"])[ib] * np.exp(-(pt - 15) / s["scale"])) * (1 + np.asarray(s["slope"])[ib] * (pt - 40))


def test_truth_scale_factors_depend_on_pt_as_the_card_says():
    """The truth scale factors of the reco, tracking and ID steps at 25 and 55 GeV differ by the
    card's pT shapes (an independent evaluation of (1 - depth e^{-(pT-15)/scale})(1 + slope
    (pT - 40)) in data over simulation), by at least a few per mille in every step of the chain;
    the old universe's flat shapes would give no difference.  The veto's loose ID is a flat
    number of the cards (the same in data and simulation): its SF is 1 everywhere."""
    eta = [-2.4, -1.2, 0.0, 1.2, 2.4]
    data, nom = load_card("data")["detector"], load_card("nominal")["detector"]
    veto = truth.efficiency_scale_factors("veto", eta, [15.0, 20.0, 54.0, 56.0], purpose="test: flat veto")
    np.testing.assert_allclose(veto.eff_data, data["efficiency"]["loose_id"])
    np.testing.assert_allclose(veto.sf, data["efficiency"]["loose_id"] / nom["efficiency"]["loose_id"])
    for step in (s for s in E.STEPS if s != "veto"):
        sf = truth.efficiency_scale_factors(step, eta, [24.0, 26.0, 54.0, 56.0], purpose="test: SF pT dependence").sf
        ratio = sf[:, 0] / sf[:, 2]                                  # (eta, charge)
        assert np.max(np.abs(ratio - 1)) > 2e-3, (step, ratio)
        if step not in E.CHARGE_STEPS or step == "trigger":
            continue
        ib = eta_bin(0.5 * (np.array(eta[1:]) + np.array(eta[:-1])))     # the bin centres
        d, m = data["efficiency_pt"][step], nom["efficiency_pt"][step]
        expect = (_shape(d, ib, 25.0) * _shape(m, ib, 55.0)) / (_shape(d, ib, 55.0) * _shape(m, ib, 25.0))
        np.testing.assert_allclose(ratio[:, 1], expect, rtol=2e-6)
    assert truth.READS[-1][1] == "efficiency_scale_factors:isolation"


def test_trigger_and_isolation_depend_on_upar(z_probes):
    """Trigger and isolation efficiencies fall where the recoil points along the muon
    (u_par = q_T . p_mu < 0), in the truth and in the generated probes, and their data/simulation
    scale factors depend on u_par (the data's recoil leaks more into the cone)."""
    u_edges = [-40.0, -20.0, -5.0, 5.0, 40.0]
    for step in E.UPAR_STEPS:
        sf = truth.efficiency_scale_factors(step, [0.0, 0.1], [30.0, 31.0], upar_edges=u_edges,
                                            purpose="test: u_par dependence")
        eff = sf.eff_mc[0, 0, 1]
        assert eff[0] < eff[-1] - (0.05 if step == "trigger" else 0.02), (step, eff)
        assert sf.sf[0, 0, 1, 0] < sf.sf[0, 0, 1, -1] - 0.005, (step, sf.sf[0, 0, 1])
        cols, det = z_probes["nominal"]
        meas, expect, err = _pass_fractions(cols, det, step, edges=np.array(u_edges), var="probe_gen_upar")
        assert meas[0] < meas[-1] - 5 * np.hypot(err[0], err[-1]), (step, meas)
        assert np.all(np.abs(meas - expect) < 4 * err + 2e-4), (step, meas, expect)


def test_unconditional_isolation_truth_is_exact():
    """Away from tag-and-probe (no tag to bias the pileup), the generated trigger and isolation
    decisions of W muons follow the truth tables in bins of reconstructed pT and u_par within
    statistics: the tables integrate the detector's own cone model."""
    card = load_card("data")
    det = card["detector"]
    t = GENERATORS["wplus_munu"](np.random.default_rng(3), 300_000, card["physics"])
    r = simulate(t, det, np.random.default_rng(4), is_data=False)
    pt_t, eta_t, phi_t = kin.pt_eta_phi(t.mu_p4[:, 0])
    upar = -(t.had[:, 0] * np.cos(phi_t) + t.had[:, 1] * np.sin(phi_t))
    mu = {k: v[:, 0] for k, v in r["muon"].items()}
    idp = r["muon_exists"][:, 0] & mu["isGlobal"] & mu["mediumId"] & (np.abs(mu["dxy"]) < 0.05)
    pulls = []
    for step, probe, passed in (("trigger", idp, mu["triggerMatch"]),
                                ("isolation", idp & mu["triggerMatch"], mu["pfRelIso04_all"] < 0.15)):
        eff = E.truth_efficiency(det, step, eta_t, pt_t, t.mu_charge[:, 0], upar, mu["pt"])
        for lo, hi in ((24, 27), (27, 32), (32, 40), (40, 56)):
            for ulo, uhi in ((-100, -15), (-15, 0), (0, 100)):
                s = probe & (mu["pt"] > lo) & (mu["pt"] < hi) & (upar > ulo) & (upar < uhi)
                e = eff[s].mean()
                if s.sum() > 100 and e < 1 - 1e-3:
                    pulls.append((passed[s].mean() - e) / np.sqrt(e * (1 - e) / s.sum()))
    pulls = np.array(pulls)
    assert pulls.size > 15 and np.mean(pulls**2) < 2.0 and np.max(np.abs(pulls)) < 4, pulls


def test_probe_averaged_truth_and_bad_arguments():
    """Bin-centre and probe-averaged truth agree where the efficiency is flat within a bin; empty
    bins are NaN; bad inputs fail by name."""
    det = load_card("nominal")["detector"]
    rng = np.random.default_rng(1)
    n = 20_000
    probes = {"eta": rng.uniform(0.0, 0.1, n), "pt": rng.uniform(40.0, 41.0, n),
              "charge": rng.choice([-1, 1], n), "upar": rng.uniform(5.0, 6.0, n)}
    for step in E.STEPS:
        c = E.binned_efficiencies(det, det, step, [0.0, 0.1, 0.2], [40.0, 41.0], probes=None)
        p = E.binned_efficiencies(det, det, step, [0.0, 0.1, 0.2], [40.0, 41.0], probes=probes)
        assert p.method == "probe-average" and c.method == "bin-centre"
        np.testing.assert_allclose(p.eff_mc[0], c.eff_mc[0], atol=3e-4)
        assert np.all(np.isnan(p.eff_mc[1])) and np.all(p.n_probes[1] == 0)
        np.testing.assert_allclose(p.sf[0], 1.0)
    with pytest.raises(ValueError, match="step"):
        E.truth_efficiency(det, "tracker", 0.0, 30.0, 1)
    with pytest.raises(ValueError, match="pt_edges"):
        E.binned_efficiencies(det, det, "id", [0.0, 0.1], [40.0])
    with pytest.raises(KeyError, match="upar"):
        E.binned_efficiencies(det, det, "id", [0.0, 0.1], [40.0, 41.0], probes={"eta": [0.0], "pt": [40.0], "charge": [1]})
    with pytest.raises(ValueError, match="purpose"):
        truth.efficiency_scale_factors("id", [0.0, 0.1], [40.0, 41.0], purpose="")
    with pytest.raises(ValueError, match="tag-and-probe step"):
        tnp_step_masks({"probe_pass_sta": np.ones(1, bool)}, "standalone")
    assert set(TNP_STEPS) == set(E.STEPS)
