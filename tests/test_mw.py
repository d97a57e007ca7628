"""Unit and closure tests of chapter 08's machinery (wmnb.mw) on toy W events.

The toy: W -> mu nu with a running-width Breit-Wigner line shape (sampled by accept-reject,
so "data" at a different mass are generated independently, not reweighted), a gamma-distributed
q_T, a (1 -+ cos)^2 decay, a 1 % pT resolution, plus a Z-like background.
"""
from __future__ import annotations

import numpy as np
import pytest

from wmnb.mw import binning, model
from wmnb.templatefit import blinding, reffit
from wmnb.conventions import breit_wigner, width_for_mass
from wmnb.templatefit.breitwigner import mass_weights
from wmnb.mw.systematics import MwConfig
from wmnb.fit.toymodels import muon_kinematics
from wmnb.mw.templates import build_templates

M0, G0 = 80.379, 2.085          # simulation line shape (GeV)


def toy_sample(n: int, charge: int, mass: float, width: float, rng: np.random.Generator,
               weight: float = 1.0) -> dict[str, np.ndarray]:
    """Toy W events with generator mass drawn from the running-width BW(mass, width)."""
    lo, hi = 50.0, 110.0
    out = []
    need = n
    grid = np.linspace(lo, hi, 20001)
    cauchy = lambda m: 1.0 / ((m - mass) ** 2 + width**2 / 4)
    bound = 1.05 * np.max(breit_wigner(grid, mass, width) / cauchy(grid))
    while need > 0:
        m = mass + width / 2 * np.tan(rng.uniform(np.arctan((lo - mass) * 2 / width),
                                                  np.arctan((hi - mass) * 2 / width), 2 * need))
        keep = rng.uniform(size=m.size) * bound < breit_wigner(m, mass, width) / cauchy(m)
        out.append(m[keep][:need])
        need -= out[-1].size
    m = np.concatenate(out)
    qt = rng.gamma(1.6, 4.5, n)
    y = rng.normal(0, 1.9, n)
    c = 2 * np.cbrt(rng.uniform(size=n)) - 1
    c = -c if charge > 0 else c
    phi = rng.uniform(0, 2 * np.pi, n)
    pt_true, eta = muon_kinematics(m, qt, y, c, phi)
    pt = pt_true * rng.normal(1, 0.01, n)
    r, f = np.meshgrid([0.5, 1, 2], [0.5, 1, 2], indexing="ij")
    scale = 1 + 0.05 * np.log2(r.ravel())[None, :] * (qt[:, None] / 20) + 0.02 * np.log2(f.ravel())[None, :]
    pdf = np.column_stack([np.ones(n), 1 + 0.01 * y, 1 - 0.01 * y, 1 + 0.003 * qt / 10, 1 - 0.003 * qt / 10])
    return {"mu_pt": pt, "mu_eta": eta, "mu_charge": np.full(n, charge, dtype=np.int32),
            "weight": np.full(n, weight), "gen_mass": m, "gen_qt": qt, "lhe_scale": scale, "lhe_pdf": pdf, **_passing(pt, rng)}


def _passing(pt: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Columns of the final cuts that the toys do not model: isolated, no extra leptons, MET
    balancing the muon (no recoil), so m_T = 2 pT passes the m_T > 40 GeV cut."""
    n = pt.size
    phi = rng.uniform(-np.pi, np.pi, n)
    return {"mu_phi": phi, "mu_iso": np.zeros(n), "veto_pass": np.ones(n, dtype=bool),
            "met_pt": pt.copy(), "met_phi": np.where(phi > 0, phi - np.pi, phi + np.pi), "mt": 2 * pt}


def toy_background(n: int, rng: np.random.Generator, weight: float = 1.0) -> dict[str, np.ndarray]:
    """A smooth Z-like background falling in pT."""
    pt = 26 + rng.exponential(12.0, n)
    return {"mu_pt": pt, "mu_eta": rng.uniform(-2.4, 2.4, n),
            "mu_charge": np.where(rng.uniform(size=n) < 0.5, -1, 1).astype(np.int32),
            "weight": np.full(n, weight), **_passing(pt, rng)}


def toy_universe(n_data: int, data_mass: float, seed: int, mc_factor: float = 2.0):
    """(simulation samples, data columns): data generated at ``data_mass``, simulation at M0."""
    rng = np.random.default_rng(seed)
    n_bkg = n_data // 20
    gw = width_for_mass(data_mass, M0, G0)
    parts = [toy_sample(int(0.57 * n_data), 1, data_mass, gw, rng),
             toy_sample(int(0.43 * n_data), -1, data_mass, gw, rng), toy_background(n_bkg, rng)]
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[-1] if k != "weight"}
    n_mc = int(mc_factor * n_data)
    samples = {
        "wplus_munu": toy_sample(int(0.57 * n_mc), 1, M0, G0, rng, 1 / mc_factor),
        "wminus_munu": toy_sample(int(0.43 * n_mc), -1, M0, G0, rng, 1 / mc_factor),
        "z_mumu": toy_background(int(mc_factor * n_bkg), rng, 1 / mc_factor),
    }
    return samples, data


# unsmoothed mass templates: the injection tests then check the interpolation exactly
CONFIG = MwConfig(ref_mass_gev=M0, ref_width_gev=G0, qt_edges=(0.0, 5.0, 10.0, np.inf), mass_eta_merge=1)


# ---------------------------------------------------------------- Breit-Wigner weights
def test_bw_reweighting_matches_a_sample_generated_at_the_new_mass():
    """Reweighting M0 -> M0 + 100 MeV must reproduce the mass distribution of an independent
    sample generated at M0 + 100 MeV (mean shift within statistics, chi2 of the shapes)."""
    rng = np.random.default_rng(1)
    m1 = M0 + 0.1
    a = toy_sample(400_000, 1, M0, G0, rng)["gen_mass"]
    b = toy_sample(400_000, 1, m1, width_for_mass(m1, M0, G0), rng)["gen_mass"]
    w = mass_weights(a, M0, G0, m1)
    mean_a = np.average(a, weights=w)
    err = np.std(b) / np.sqrt(b.size) * np.sqrt(2)
    assert abs(mean_a - b.mean()) < 4 * err
    assert abs(np.mean(a) - b.mean()) > 0.07        # without the weights the shift is visible
    edges = np.linspace(76, 85, 31)
    ha, _ = np.histogram(a, edges, weights=w)
    ha2, _ = np.histogram(a, edges, weights=w**2)
    hb, _ = np.histogram(b, edges)
    chi2 = np.sum((ha - hb) ** 2 / (ha2 + hb))
    assert chi2 < 30 + 4 * np.sqrt(60)


def test_bw_weights_are_normalised_and_width_follows_mass():
    assert width_for_mass(2 * M0, M0, G0) == pytest.approx(8 * G0)
    from wmnb.conventions import breit_wigner_mass_density

    m = np.linspace(50, 150, 2_000_001)
    for new in (M0 - 0.1, M0 + 0.1, M0 + 0.5):
        w = mass_weights(m, M0, G0, new)
        density = breit_wigner_mass_density(m, M0, G0)     # the generated line shape
        assert np.sum(w * density) / np.sum(density) == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(mass_weights(m[:10], M0, G0, M0), 1.0)
    with pytest.raises(ValueError, match="gen_mass"):
        mass_weights(np.array([80.0, 0.0]), M0, G0, M0 + 0.1)


def test_mass_weights_keep_the_generated_total():
    """Over the universe's generated line shape (2m BW dm on [50, 150] GeV) the normalised mass
    and width weights keep the total: they move the line shape only.  (Before the fix, the
    integral lacked the Jacobian 2m and the ±100 MeV weights moved the total by ±0.121 %.)"""
    from scipy import integrate

    from wmnb.conventions import breit_wigner_mass_density

    def generated_mean(new_mass: float, new_width: float | None = None) -> float:
        def f(m: float, weighted: bool) -> float:
            w = mass_weights(np.array([m]), M0, G0, new_mass, new_width)[0] if weighted else 1.0
            return w * float(breit_wigner_mass_density(m, M0, G0))
        num, den = (integrate.quad(f, 50.0, 150.0, args=(wt,), points=[M0], limit=400, epsabs=0,
                                   epsrel=1e-12)[0] for wt in (True, False))
        return num / den - 1.0

    for shifted in (generated_mean(M0 + 0.1), generated_mean(M0 - 0.1), generated_mean(M0, G0 + 0.042)):
        assert abs(shifted) < 1e-8      # the old normalisation gave 1.2e-3 and 3.0e-4
    # the weights still move the mean mass by the shift
    grid = np.linspace(50.0, 150.0, 400_001)
    dens = breit_wigner_mass_density(grid, M0, G0)
    w = mass_weights(grid, M0, G0, M0 + 0.1)
    assert np.sum(grid * w * dens) / np.sum(w * dens) - np.sum(grid * dens) / np.sum(dens) == pytest.approx(0.1, rel=0.05)


# ---------------------------------------------------------------- binning and templates
def test_bin_index_agrees_with_numpy_histogramdd():
    rng = np.random.default_rng(2)
    n = 50_000
    eta, pt = rng.uniform(-2.6, 2.6, n), rng.uniform(24, 58, n)
    q = rng.choice([-1, 1], n)
    w = rng.uniform(0.5, 1.5, n)
    vals, sumw2 = binning.fill(binning.bin_index(eta, pt, q), w)
    keep = pt < 56                                  # numpy's last bin is closed; ours is not
    ref, _ = np.histogramdd((eta[keep], pt[keep], q[keep]), bins=(binning.ETA_EDGES, binning.PT_EDGES,
                            binning.CHARGE_EDGES), weights=w[keep])
    assert np.allclose(vals, ref)
    ref2, _ = np.histogramdd((eta[keep], pt[keep], q[keep]), bins=(binning.ETA_EDGES, binning.PT_EDGES,
                             binning.CHARGE_EDGES), weights=w[keep] ** 2)
    assert np.allclose(sumw2, ref2)
    h = binning.to_hist(vals, sumw2)
    assert np.allclose(h.values(), vals) and np.allclose(h.variances(), sumw2)


def test_regions_partition_the_bins():
    for a, b in (("plus", "minus"), ("etapos", "etaneg"), ("central", "forward")):
        ma, mb = binning.region_mask(a), binning.region_mask(b)
        assert not (ma & mb).any() and (ma | mb).all()
    assert binning.region_mask("pt27-55").sum() == 48 * 28 * 2
    with pytest.raises(ValueError, match="unknown region"):
        binning.region_mask("pt20-60")


@pytest.fixture(scope="module")
def toy_templates():
    samples, data = toy_universe(200_000, M0, seed=3)
    return build_templates(samples, data, CONFIG, mass_shifts_mev=np.linspace(-100, 100, 20))


def test_templates_hold_every_builtin_variation(toy_templates):
    ts = toy_templates
    assert set(ts.processes) == {"wplus_munu", "wminus_munu", "z_mumu"}
    wp = ts.processes["wplus_munu"]
    names = set(wp.shapes)
    assert {"widthW", "pdf1", "pdf2"} <= names
    assert {f"scale{k}_qT{j}" for k in ("MuR", "MuF", "MuRMuF") for j in range(3)} <= names
    assert ts.processes["z_mumu"].shapes == {}
    # the q_T-decorrelated scale pieces add up to the inclusive variation (linear in the weight)
    inclusive = sum(wp.varied(f"scaleMuR_qT{j}")[0] - wp.nominal for j in range(3)) + wp.nominal
    assert inclusive.sum() > wp.nominal.sum()
    # W+ and W- muons land in their charge bins only
    assert wp.nominal[..., 0].sum() == 0 and wp.nominal[..., 1].sum() > 0
    # +100 MeV moves the Jacobian peak up: more events above 38 GeV, fewer below
    pt = binning.pt_centers()
    ratio = ts.mass_up["wplus_munu"].sum(axis=(0, 2)) / wp.nominal.sum(axis=(0, 2))
    assert ratio[pt > 42].mean() > 1.0 > ratio[(pt > 30) & (pt < 36)].mean()
    assert ts.n_data == pytest.approx(ts.data.sum())


def test_missing_columns_give_clear_errors():
    samples, data = toy_universe(2_000, M0, seed=4)
    del samples["wplus_munu"]["gen_mass"]
    with pytest.raises(KeyError, match="gen_mass"):
        build_templates(samples, data, CONFIG)
    samples, data = toy_universe(2_000, M0, seed=4)
    del samples["wminus_munu"]
    with pytest.raises(KeyError, match="both charges"):
        build_templates(samples, data, CONFIG)


# ---------------------------------------------------------------- fits
def test_mass_injection_closure_at_20_points(toy_templates):
    """Asimov data with the signal reweighted *exactly* to M0 + δ (20 points in ±100 MeV) are
    fitted with the interpolated ±100 MeV templates and full systematics: δ comes back."""
    ts = toy_templates
    residuals = []
    for shift in sorted(ts.mass_scan):
        spec = model.make_spec(ts, data=model.asimov(ts, shift))
        res = reffit.fit(spec)
        assert res.converged
        residuals.append(res.value("mass") * ts.config.mass_step_mev - shift)
    assert len(residuals) == 20
    assert np.max(np.abs(residuals)) < 0.1, residuals          # MeV, as in the paper


def test_closure_on_independently_generated_data():
    """Data generated at M0 + 70 MeV (their own BW sampling, not reweighted) must give back
    +70 MeV within 3 sigma; sigma is ~25 MeV, so a sign or unit error fails."""
    truth = 70.0
    samples, data = toy_universe(1_000_000, M0 + truth * 1e-3, seed=5)
    ts = build_templates(samples, data, CONFIG)
    res = reffit.fit(model.make_spec(ts))
    mw, err = res.value("mass") * 100, res.error("mass") * 100
    assert 10 < err < 45
    assert abs(mw - truth) < 3 * err, (mw, err)


def test_eta_smoothing_of_the_mass_variation(toy_templates):
    """Smoothing keeps the block sums and the nominal, and removes most template noise: the
    Fisher information of the smoothed templates comes close to the noise-free estimate."""
    import dataclasses

    from wmnb.mw.chapter import fisher_mass_error
    from wmnb.mw.templates import smoothed_mass_variation

    ts = toy_templates
    up, down = smoothed_mass_variation(ts, 8)
    for p in ts.signal:
        blocks = lambda a: a.reshape(6, 8, 30, 2).sum(1)
        assert np.allclose(blocks(up[p]), blocks(ts.mass_up[p]))
        assert np.allclose(blocks(down[p]), blocks(ts.mass_down[p]))
    assert smoothed_mass_variation(ts, 1)[0] is ts.mass_up
    with pytest.raises(ValueError, match="divide"):
        smoothed_mass_variation(ts, 5)
    raw, noise_free = fisher_mass_error(ts)
    smooth, _ = fisher_mass_error(ts.with_config(dataclasses.replace(ts.config, mass_eta_merge=8)))
    assert raw < smooth < 1.1 * noise_free
    assert raw < 0.9 * noise_free          # the toy simulation (2x data) is noisy without smoothing


def test_split_pois_and_floating_norm(toy_templates):
    ts = toy_templates
    spec = model.make_spec(ts, data=model.asimov(ts, ts.config.mass_step_mev), pois="charge", float_norm=True)
    res = reffit.fit(spec)
    assert res.value("mass_plus") == pytest.approx(1.0, abs=0.02)
    assert res.value("mass_minus") == pytest.approx(1.0, abs=0.02)
    assert res.value("norm_w") == pytest.approx(1.0, abs=0.01)
    sub = model.make_spec(ts, region="pt30-50", pois="centralforward")
    assert sub.data.size == 48 * 20 * 2 and set(sub.pois) == {"mass_central", "mass_forward"}


# ---------------------------------------------------------------- blinding
def test_blinding_offset_is_reproducible_and_bounded():
    offs = [blinding.offset_mev(s) for s in range(200)]
    assert all(-500 <= o <= 500 for o in offs)
    assert blinding.offset_mev(7) == blinding.offset_mev(7)
    assert np.std(offs) > 200                      # spread over the range, not constant
    assert blinding.offset_mev(7) != blinding.offset_mev(8)
    shown = blinding.present(80_400.0, seed=7, unblind=False)
    assert shown == pytest.approx(80_400.0 + blinding.offset_mev(7))
    assert blinding.present(80_400.0, seed=7, unblind=True) == 80_400.0


def test_blinding_offset_comes_from_a_local_secret(tmp_path, monkeypatch):
    """The offset is not a function of the repository and the seed alone: another key gives
    another offset; the key file is made on first use, private, and then reused."""
    monkeypatch.delenv(blinding.KEY_ENV, raising=False)
    monkeypatch.setenv(blinding.KEY_ENV_FILE, str(tmp_path / "sub" / "blinding.key"))
    first = blinding.offset_mev(7)
    key = tmp_path / "sub" / "blinding.key"
    assert key.is_file() and (key.stat().st_mode & 0o777) == 0o600
    assert blinding.offset_mev(7) == first                      # reused, not regenerated
    monkeypatch.setenv(blinding.KEY_ENV_FILE, str(tmp_path / "other.key"))
    assert blinding.offset_mev(7) != first                      # another machine, another offset
    monkeypatch.setenv(blinding.KEY_ENV, "a secret of the blind challenge")
    assert blinding.offset_mev(7) == blinding.offset_mev(7) != first
    (tmp_path / "short.key").write_text("abc\n")
    monkeypatch.delenv(blinding.KEY_ENV)
    monkeypatch.setenv(blinding.KEY_ENV_FILE, str(tmp_path / "short.key"))
    with pytest.raises(blinding.BlindingKeyError, match="too short"):
        blinding.offset_mev(7)


# ---------------------------------------------------------------- the correction hook
def _corrections():
    """Toy corrections of the three kinds, as calibration chapters would publish them."""
    from wmnb.corrections import Correction, WeightSet

    class EffSF(Correction):
        name, kinds = "toyEff", ("weight",)

        def weights(self, columns, sample):
            n = len(columns["mu_pt"])
            up = 0.9 * (1 + 0.01 * columns["mu_eta"])
            return WeightSet(np.full(n, 0.9), {"effEtaUp": up, "effEtaDown": 1.8 - up, "effOneSided": np.full(n, 0.95)},
                             {"effEta": "muonEfficiency", "effOneSided": "muonEfficiency"})

    class Scale(Correction):
        name, kinds = "toyScale", ("muon",)

        def correct(self, columns, sample):
            columns["mu_pt"] = columns["mu_pt"] * 1.001

    class Nonprompt(Correction):
        name, kinds = "toyNonprompt", ("template",)

        def templates(self, **context):
            nom = np.full(context["shape"], 2.0)
            return {"nonprompt": {"nominal": nom, "variations": {"npShapeUp": nom * 1.1}, "groups": {"npShape": "nonprompt"}}}

    class LazyScale(Correction):
        """Offers its (many) variations one at a time, like chapter 02's calibration."""
        name, kinds = "toyLazy", ("weight",)

        def nominal_factor(self, columns, sample):
            return None  # a lazy correction overrides both, as the Correction docstring says

        def iter_variations(self, columns, sample):
            for k in range(3):
                up = 1 + 0.001 * (k + 1) * (columns["mu_pt"] - 40)
                yield f"lazy{k}", "muonScale", up, 2 - up

        def weights(self, columns, sample):
            raise AssertionError("the chapter must use iter_variations, not materialise weights()")

    return [Scale(), EffSF(), Nonprompt(), LazyScale()]


def test_corrections_enter_through_the_hook():
    samples, data = toy_universe(20_000, M0, seed=6)
    plain = build_templates(samples, data, CONFIG)
    ts = build_templates(samples, data, CONFIG, corrections=_corrections())
    wp, wp0 = ts.processes["wplus_munu"], plain.processes["wplus_munu"]
    # weight correction: nominal scaled by 0.9 (up to the 0.1 % pT shift moving a few events)
    assert wp.nominal.sum() == pytest.approx(0.9 * wp0.nominal.sum(), rel=5e-3)
    up, down = wp.varied("effEta")
    assert wp.shapes["effEta"].group == "muonEfficiency"
    eta = binning.eta_centers()[:, None, None]
    assert (up - wp.nominal)[(eta > 1).repeat(30, 1).repeat(2, 2)].sum() > 0 > (down - wp.nominal)[(eta > 1).repeat(30, 1).repeat(2, 2)].sum()
    assert wp.shapes["effOneSided"].down is None
    assert all(wp.shapes[f"lazy{k}"].group == "muonScale" for k in range(3))
    pt = binning.pt_centers()[None, :, None]
    lazy_up = wp.varied("lazy2")[0]
    assert (lazy_up - wp.nominal)[:, pt[0, :, 0] > 45].sum() > 0 > (lazy_up - wp.nominal)[:, pt[0, :, 0] < 35].sum()
    # template correction: the process is added/replaced with its own nuisances
    npt = ts.processes["nonprompt"]
    assert npt.source == "toyNonprompt" and np.all(npt.nominal == 2.0)
    spec = model.make_spec(ts)
    assert ("npShape", "nonprompt") in [(s.name, s.process) for s in spec.shapes]
    assert ("lumi", "nonprompt") not in [(n[0], n[1]) for n in spec.norms]
    names = [row["source"] for row in ts.sources]
    assert {"toyEff", "toyScale", "toyNonprompt"} <= set(names)


# ---------------------------------------------------------------- chapter tables
def test_chapter_tables(toy_templates):
    from wmnb.mw import chapter, fitting

    table = chapter.impact_table({"pdf": 1.234, "stat": 2.0, "total": 3.0}, None)
    assert "| pdf | 1.23 | – | 4.4 | 2.8 |" in table and table.strip().endswith("| total | 3.00 | – | 9.9 | 9.9 |")
    rows = chapter.sensitivity_table(40.0, 117e6 / 400, 60.0, 55.0, noise_free_stat=50.0)
    scaled = {r["quantity"]: r["this book"] for r in rows}
    assert scaled["data-statistics uncertainty scaled to 117 M"] == pytest.approx(2.0)
    assert scaled["… free of template noise (Fisher), scaled to 117 M"] == pytest.approx(2.5)
    checks = fitting.cross_checks(toy_templates, ["charge", "pt27-55", "norm_floating"], backend="reference")
    nominal = fitting.run_fit(model.make_spec(toy_templates), backend="reference")
    got = {(r["check"], r["quantity"]) for r in chapter.cross_check_rows(checks, nominal)}
    assert ("charge", "mass_plus − mass_minus") in got and ("norm_floating", "W normalisation μ") in got
    assert ("pt27-55", "m_W shift vs nominal fit") in got


def test_unphysical_variations_are_rejected_and_listed():
    from wmnb.corrections import Correction

    class Broken(Correction):
        name, kinds = "broken", ("weight",)

        def iter_variations(self, columns, sample):
            n = len(columns["mu_pt"])
            yield "fine", "muonScale", np.full(n, 1.01), np.full(n, 0.99)
            yield "huge", "muonScale", np.full(n, 1e-300), np.full(n, 1.0)

    samples, data = toy_universe(5_000, M0, seed=7)
    with pytest.warns(UserWarning, match="'huge'"):
        ts = build_templates(samples, data, CONFIG, corrections=[Broken()])
    assert "fine" in ts.processes["wplus_munu"].shapes and "huge" not in ts.processes["wplus_munu"].shapes
    assert any(r["kind"] == "dropped" and "huge (wplus_munu)" in r["detail"] for r in ts.sources)
    # kept aside for consumers that need the yields' change, not a fit shape (chapter 05)
    kept = ts.processes["wplus_munu"].rejected["huge"]
    assert np.all(kept.dense(ts.processes["wplus_munu"].nominal)[0] < 1e-200)
