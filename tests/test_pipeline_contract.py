"""The contract of the one correction pipeline: toy corrections of every kind give identical
results through every consumer (the histogram engine, in chunks or not, and the template
builder of the fits).  Before the pipeline existed, a correction written the lazy way
(``nominal_factor`` + ``iter_variations``) contributed nothing through ``histogram_skim``."""
from __future__ import annotations

import hist
import numpy as np
import pytest

from wmnb.corrections import (ColumnVariation, Correction, Variation, WeightSet, pair_variations,
                              weightset_variations)
from wmnb.engine import histogram as engine
from wmnb.engine.kinematics import to_xy
from wmnb.engine.pipeline import run_pipeline
from wmnb.mw import binning
from wmnb.mw.systematics import MwConfig
from wmnb.mw.templates import build_templates

from test_mw import G0, M0, toy_universe

N_LAZY = 60


class ToyScale(Correction):
    """Column-changing: moves pT with eta, *in place* (the pipeline must protect the caller)."""

    name, kinds = "toyScale", ("muon",)

    def correct(self, columns, sample):
        columns["mu_pt"] *= 1.0 + 0.002 * columns["mu_eta"]


class ToyLazy(Correction):
    """Weight with many lazy variations, half of them local (one eta bin's events)."""

    name, kinds = "toyLazy", ("weight",)

    def nominal_factor(self, columns, sample):
        return 1.0 + 0.05 * np.cos(columns["mu_phi"])

    def iter_variations(self, columns, sample):
        eta = np.asarray(columns["mu_eta"])
        ibin = np.clip(((eta + 2.4) / 0.1).astype(int), 0, 47)
        for k in range(N_LAZY):
            if k % 2:
                rows = np.flatnonzero(ibin == k % 48)
                up = np.full(rows.size, 1.01 + 0.001 * k)
                yield Variation(f"effStat{k}", "muonEfficiency", up, 2.0 - up, rows)
            else:
                up = 1.0 + 0.0005 * k * (columns["mu_pt"] - 40.0) / 10.0
                yield f"lazyScale{k}", "muonScale", up, 2.0 - up

    def weights(self, columns, sample):
        raise AssertionError("a lazy correction must never be materialised")


class ToyEager(Correction):
    """Weight written the eager way: a WeightSet with a pair, a lone Up and a one-sided name."""

    name, kinds = "toyEager", ("weight",)

    def weights(self, columns, sample):
        n = len(columns["mu_pt"])
        up = 0.97 * (1.0 + 0.01 * columns["mu_eta"])
        return WeightSet(np.full(n, 0.97), {"prefEtaUp": up, "prefEtaDown": 1.94 - up,
                                            "loneUp": np.full(n, 0.99), "oneSided": np.full(n, 0.95)},
                         {"prefEta": "prefire"})


class ToyTemplate(Correction):
    """Template replacement: consumed by the template builders only (the engine fills events)."""

    name, kinds = "toyNonprompt", ("template",)

    def templates(self, **context):
        nom = np.full(context["shape"], 3.0)
        return {"nonprompt": {"nominal": nom, "variations": {"npUp": 1.2 * nom, "npDown": 0.8 * nom},
                              "groups": {"np": "nonprompt"}}}


CORRECTIONS = [ToyScale(), ToyLazy(), ToyEager(), ToyTemplate()]
CONFIG = MwConfig(ref_mass_gev=M0, ref_width_gev=G0, qt_edges=(0.0, 5.0, 10.0, np.inf), mass_eta_merge=1,
                  use_pdf=False, use_scales=False)
AXES = [hist.axis.Variable(binning.ETA_EDGES, name="eta", underflow=False, overflow=False),
        hist.axis.Variable(binning.PT_EDGES, name="pt", underflow=False, overflow=False),
        hist.axis.Variable(binning.CHARGE_EDGES, name="charge", underflow=False, overflow=False)]
FIELDS = ["mu_eta", "mu_pt", "mu_charge"]


@pytest.fixture(scope="module")
def universe():
    samples, data = toy_universe(6_000, M0, seed=11)
    return samples, data


def _engine_hist(monkeypatch, cols, chunk_rows):
    from wmnb.engine import skims

    monkeypatch.setattr(skims, "read_skim", lambda *a, **k: {k2: v.copy() for k2, v in cols.items()})
    return engine.histogram_skim("unused", "w", "wplus_munu", AXES, FIELDS, corrections=CORRECTIONS,
                                 chunk_rows=chunk_rows)


def test_pairing_rule_is_the_only_one():
    assert pair_variations(["xUp", "xDown", "yUp", "zDown", "w"]) == [
        ("x", "xUp", "xDown"), ("y", "yUp", None), ("z", "zDown", None), ("w", "w", None)]
    ws = WeightSet(np.full(3, 2.0), {"aUp": np.full(3, 3.0), "aDown": np.full(3, 1.0), "b": np.full(3, 2.2)},
                   {"a": "groupA"})
    got = {v.nuisance: v for v in weightset_variations(ws, "src")}
    assert got["a"].group == "groupA" and got["b"].group == "src"      # the one group fallback
    assert np.allclose(got["a"].up, 1.5) and np.allclose(got["a"].down, 0.5) and got["b"].down is None


def test_every_consumer_gives_identical_results(universe, monkeypatch):
    samples, data = universe
    cols = samples["wplus_munu"]
    before = {k: v.copy() for k, v in cols.items()}
    ts = build_templates(samples, data, CONFIG, corrections=CORRECTIONS)
    assert all(np.array_equal(cols[k], before[k]) for k in cols), "the pipeline modified the caller's columns"
    tmpl = ts.processes["wplus_munu"]
    whole = _engine_hist(monkeypatch, cols, chunk_rows=10**9)
    chunked = _engine_hist(monkeypatch, cols, chunk_rows=997)
    syst = list(whole.axes["syst"])
    assert syst == list(chunked.axes["syst"])
    # every correction variation reached the engine, lazy and local ones included
    expected = [f"{b}{s}" for k in range(N_LAZY) for b in [f"effStat{k}" if k % 2 else f"lazyScale{k}"]
                for s in ("Up", "Down")] + ["prefEtaUp", "prefEtaDown", "lone", "oneSided"]
    assert syst == ["nominal", *expected]
    for h in (whole, chunked):
        vals = h.values()
        assert np.allclose(vals[..., 0], tmpl.nominal, rtol=1e-10, atol=1e-12)
        for i, name in enumerate(syst[1:], start=1):
            base = name[:-2] if name.endswith("Up") else name[:-4] if name.endswith("Down") else name
            up, down = tmpl.varied(base)
            ref = down if name.endswith("Down") and down is not None else up
            assert np.allclose(vals[..., i], ref, rtol=1e-10, atol=1e-12), name
    assert tmpl.shapes["effStat1"].group == "muonEfficiency" and tmpl.shapes["oneSided"].group == "toyEager"
    assert tmpl.shapes["effStat1"].bins is not None and tmpl.shapes["lazyScale0"].bins is None
    assert whole.metadata["groups"]["effStat1"] == "muonEfficiency"
    # template replacement: the builder replaces the process with its own nuisances
    npt = ts.processes["nonprompt"]
    assert npt.source == "toyNonprompt" and np.allclose(npt.varied("np")[0], 3.6)


def test_local_variation_touches_only_its_rows(universe):
    samples, _ = universe
    result = run_pipeline("w", "wplus_munu", samples["wplus_munu"], corrections=[ToyLazy()])
    local = next(v for v in result.variations() if v.rows is not None)
    up, down = local.full(result.weight.size)
    untouched = np.setdiff1d(np.arange(up.size), local.rows)
    assert np.all(up[untouched] == 1.0) and np.all(down[untouched] == 1.0)
    assert local.rows.size < up.size / 10


def test_data_is_never_reweighted(universe):
    _, data = universe
    result = run_pipeline("w", "data", data, corrections=CORRECTIONS)
    assert np.all(result.weight == 1.0) and list(result.variations()) == []
    assert "toyScale" in result.applied


class ToyTheory(Correction):
    """Replaces the fit's built-in PDF treatment with its own nuisances (as chapter 06 will)."""

    name, kinds, supersedes = "toyTheory", ("weight",), ("pdf",)

    def weights(self, columns, sample):
        n = len(columns["mu_pt"])
        return WeightSet(None, {"theoryPdf1Up": np.full(n, 1.01), "theoryPdf1Down": np.full(n, 0.99)},
                         {"theoryPdf1": "pdf"})


def test_a_correction_supersedes_builtin_sources(universe):
    samples, data = universe
    cfg = MwConfig(ref_mass_gev=M0, ref_width_gev=G0, qt_edges=(0.0, 5.0, 10.0, np.inf), mass_eta_merge=1)
    plain = build_templates(samples, data, cfg)
    assert any(k.startswith("pdf") for k in plain.processes["wplus_munu"].shapes)
    ts = build_templates(samples, data, cfg, corrections=[ToyTheory()])
    shapes = ts.processes["wplus_munu"].shapes
    assert not any(k.startswith("pdf") for k in shapes) and "theoryPdf1" in shapes
    assert any(k.startswith("scale") for k in shapes)          # other built-in sources stay
    assert [r["kind"] for r in ts.sources if r["group"] == "pdf"] == ["superseded"]


def test_manifest_supersedes_reaches_the_correction(tmp_path, monkeypatch):
    from wmnb.corrections import Manifest, discover, publish

    chapter = tmp_path / "results" / "p" / "02_toy"
    chapter.mkdir(parents=True)
    (chapter / "toy.json").write_text('{"a": 0.001}')
    publish(chapter, Manifest("toyTheory", "02_toy", ("weight",), "wmnb.engine.testing:load_toy_scale",
                              "toy.json", supersedes=("pdf", "scales")))
    monkeypatch.setenv("WMNB_RESULTS", str(tmp_path / "results"))
    (found,) = discover("p")
    assert found.supersedes == ("pdf", "scales")


def test_engine_reads_only_declared_publishers(tmp_path, monkeypatch):
    from wmnb.corrections import CorrectionError, Manifest, publish

    chapter = tmp_path / "results" / "p" / "02_toy"
    chapter.mkdir(parents=True)
    (chapter / "toy.json").write_text('{"a": 0.001}')
    publish(chapter, Manifest("toy", "02_toy", ("muon",), "wmnb.engine.testing:load_toy_scale", "toy.json"))
    monkeypatch.setenv("WMNB_RESULTS", str(tmp_path / "results"))
    with pytest.raises(CorrectionError, match="02_toy"):
        engine._resolve_corrections("p", "discover", (), from_chapters=("01_selection",))
    assert len(engine._resolve_corrections("p", "discover", (), from_chapters=("02_toy",))) == 1


# ---------------------------------------------------------------- column variations
def _recoil_against_muon(columns, rows, f0):
    """u_T = -f p_T(muon) on ``rows``, f = f0 (1/2 + |sin phi|): MET = -(1 - f) p_T, so
    m_T = 2 sqrt(1 - f) p_T, and part of the events of each low-pT bin cross 40 GeV."""
    phi = np.asarray(columns["mu_phi"])[rows]
    f = f0 * (0.5 + np.abs(np.sin(phi)))
    x, y = to_xy(np.asarray(columns["mu_pt"])[rows], phi)
    return {"ut_x": -f * x, "ut_y": -f * y}


class ToyRecoil(Correction):
    """A recoil calibration whose nominal leaves the recoil alone and whose variation (on the
    events below 45 GeV, the only ones that can cross the cut) points it against the muon."""

    name, kinds = "toyRecoil", ("muon",)

    def correct(self, columns, sample):
        pass

    def column_variations(self, columns, sample):
        rows = np.flatnonzero(np.asarray(columns["mu_pt"]) < 45.0)
        yield ColumnVariation("toyRecoilResponse", "recoil", rows, _recoil_against_muon(columns, rows, 0.3),
                              _recoil_against_muon(columns, rows, 0.35))


class ShiftedRecoil(Correction):
    """The reference: ToyRecoil's varied recoil applied as the nominal correction, on every event."""

    name, kinds = "shiftedRecoil", ("muon",)

    def __init__(self, f):
        self.f = f

    def correct(self, columns, sample):
        columns.update(_recoil_against_muon(columns, slice(None), self.f))


def test_column_variation_equals_a_rerun_with_the_varied_columns(monkeypatch):
    """A column variation through the template builder and the histogram engine equals the
    nominal of a rerun with those columns (events leave the selection below the m_T cut), with
    the weight corrections' nominal factors on the events it re-selects."""
    samples, data = toy_universe(40_000, M0, seed=12)     # no low-pT bin may be emptied
    cols = samples["wplus_munu"]
    ts = build_templates(samples, data, CONFIG, corrections=[ToyRecoil(), ToyLazy()])
    tmpl = ts.processes["wplus_munu"]
    up, down = tmpl.varied("toyRecoilResponse")
    assert tmpl.shapes["toyRecoilResponse"].group == "recoil"
    for f, got in ((0.3, up), (0.35, down)):
        ref = build_templates(samples, data, CONFIG, corrections=[ShiftedRecoil(f), ToyLazy()])
        assert np.allclose(got, ref.processes["wplus_munu"].nominal, rtol=1e-10, atol=1e-12)
    lost = 1.0 - down.sum() / tmpl.nominal.sum()
    assert 0.01 < lost < 0.5, lost                 # the variation does move events out
    monkeypatch.setattr("wmnb.engine.skims.read_skim", lambda *a, **k: {k2: v.copy() for k2, v in cols.items()})
    h = engine.histogram_skim("unused", "w", "wplus_munu", AXES, FIELDS, corrections=[ToyRecoil(), ToyLazy()],
                              chunk_rows=1500)
    syst = list(h.axes["syst"])
    for name, ref in (("toyRecoilResponseUp", up), ("toyRecoilResponseDown", down)):
        assert np.allclose(h.values()[..., syst.index(name)], ref, rtol=1e-10, atol=1e-12), name


def test_column_variation_with_bad_columns_fails_by_name(universe):
    class Bad(ToyRecoil):
        def column_variations(self, columns, sample):
            yield ColumnVariation("badRecoil", "recoil", np.arange(3), {"ut_x": np.zeros(5)})

    result = run_pipeline("w", "wplus_munu", universe[0]["wplus_munu"], corrections=[Bad()])
    with pytest.raises(ValueError, match="badRecoil.*'ut_x'.*one value per row"):
        list(result.variations())
