"""The histogram engine: fill vs hist's own fill bin by bin, skims, corrections, executors."""
from __future__ import annotations

from pathlib import Path

import hist
import numpy as np
import pytest

from wmnb import corrections as C
from wmnb.artefacts import write_json
from wmnb.engine import (fill, histogram_files, histogram_skim, list_skim_samples, make_skims, read_cutflow,
                         read_skim, run_selections)
from wmnb.engine.histogram import corrected_columns
from wmnb.engine.testing import write_toy_nanoaod


def _axes():
    return [hist.axis.Regular(30, 26, 56, name="pt"),
            hist.axis.Variable([-2.4, -1.0, 0.0, 0.5, 2.4], name="eta", underflow=False),
            hist.axis.IntCategory([-1, 1], name="charge")]


def _reference(cols, axes, fields, weight, variations, storage=None):
    """One hist.fill per variation: the straightforward way."""
    names = ["nominal", *variations]
    h = hist.Hist(*axes, hist.axis.StrCategory(names, name="syst", overflow=False),
                  storage=hist.storage.Weight() if storage is None else storage)
    for name in names:
        w = weight if name == "nominal" else variations[name]
        h.fill(*[cols[f] for f in fields], syst=name, weight=w)
    return h


def test_fill_equals_reference_bin_by_bin():
    rng = np.random.default_rng(3)
    n = 20000
    cols = {"pt": rng.uniform(20, 60, n), "eta": rng.uniform(-2.6, 2.6, n), "q": rng.choice([-1, 1, 0], n)}
    # edge values, NaN and inf land where hist puts them
    cols["pt"][:6] = [26.0, 56.0, np.nan, np.inf, -np.inf, 55.999999]
    cols["eta"][6:9] = [-2.4, 2.4, 0.0]
    w = rng.normal(1, 0.3, n)
    var = {f"v{i}": w * rng.normal(1, 0.05, n) for i in range(5)}
    axes = _axes()
    got = fill(cols, axes, ["pt", "eta", "q"], w, var)
    ref = _reference(cols, axes, ["pt", "eta", "q"], w, var)
    assert list(got.axes["syst"]) == ["nominal", *var]
    np.testing.assert_allclose(got.view(flow=True)["value"], ref.view(flow=True)["value"], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(got.view(flow=True)["variance"], ref.view(flow=True)["variance"], rtol=1e-12, atol=1e-9)
    # a wrong implementation would differ: the variations really differ from nominal
    assert not np.allclose(got[..., "v0"].values(), got[..., "nominal"].values())


def test_fill_double_storage_and_no_weight():
    rng = np.random.default_rng(4)
    cols = {"x": rng.normal(0, 1, 5000)}
    ax = [hist.axis.Regular(10, -2, 2, name="x", underflow=False, overflow=False)]
    got = fill(cols, ax, ["x"], storage="double")
    ref = hist.Hist(*ax, hist.axis.StrCategory(["nominal"], name="syst", overflow=False))
    ref.fill(cols["x"], syst="nominal")
    np.testing.assert_array_equal(got.view(flow=True), ref.view(flow=True))


def test_fill_errors():
    ax = [hist.axis.Regular(10, 0, 1, name="x")]
    with pytest.raises(KeyError, match="field 'y'"):
        fill({"x": np.zeros(3)}, ax, ["y"])
    with pytest.raises(ValueError, match="reserved"):
        fill({"x": np.zeros(3)}, ax, ["x"], np.ones(3), {"nominal": np.ones(3)})
    with pytest.raises(ValueError, match="shape"):
        fill({"x": np.zeros(3)}, ax, ["x"], np.ones(4))
    with pytest.raises(ValueError, match="growth"):
        fill({"x": np.zeros(3)}, [hist.axis.IntCategory([], growth=True, name="g")], ["x"])


# ---------------------------------------------------------------------------------------------
# a toy universe in a temporary results store

PROFILE = "enginetest"


@pytest.fixture(scope="module")
def universe(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("results")
    old = os.environ.get("WMNB_RESULTS")
    os.environ["WMNB_RESULTS"] = str(root)
    udir = root / PROFILE / "00_universe"
    files = {
        "wplus_munu": write_toy_nanoaod(udir / "samples/mc/wplus_munu/wplus_munu_0.root", 4000, 21),
        "z_mumu": write_toy_nanoaod(udir / "samples/mc/z_mumu/z_mumu_0.root", 3000, 22),
        "jpsi": write_toy_nanoaod(udir / "samples/mc/jpsi/jpsi_0.root", 3000, 23, kind="onia"),
        "SingleMuon": write_toy_nanoaod(udir / "samples/data/SingleMuon/SingleMuon_0.root", 3000, 24, mc=False),
        "MuOnia": write_toy_nanoaod(udir / "samples/data/MuOnia/MuOnia_0.root", 2000, 25, mc=False, kind="onia"),
    }
    # a second data file with zero events must be handled
    files["empty"] = write_toy_nanoaod(udir / "samples/data/SingleMuon/SingleMuon_1.root", 0, 26, mc=False)
    rel = {k: str(Path(v).relative_to(udir)) for k, v in files.items()}
    manifest = {
        "schema_version": 1, "profile": PROFILE, "lumi_pb": 100.0,
        "mc": {p: {"files": [rel[p]], "xsec_pb": 10.0, "sumw": 1000.0, "n_events": 1, "card": "nominal"}
               for p in ("wplus_munu", "z_mumu", "jpsi")},
        "data": {"SingleMuon": {"files": [rel["SingleMuon"], rel["empty"]], "n_events": 3000},
                 "MuOnia": {"files": [rel["MuOnia"]], "n_events": 2000}},
        "closure": {},
    }
    write_json(udir / "manifest.json", manifest)
    index = make_skims(PROFILE, progress=False, step=1500, manifest=manifest)
    yield {"root": root, "index": index, "files": files, "manifest": manifest}
    if old is None:
        os.environ.pop("WMNB_RESULTS", None)
    else:
        os.environ["WMNB_RESULTS"] = old


def test_make_skims_and_read(universe):
    assert list_skim_samples(PROFILE, "w") == ["wplus_munu", "z_mumu", "data"]
    assert list_skim_samples(PROFILE, "jpsi") == ["jpsi", "data"]
    w = read_skim(PROFILE, "w", "wplus_munu")
    assert w["weight"].dtype == np.float64 and w["event"].dtype == np.uint64
    # weight = genWeight * xsec * lumi / sumw * prefire: |genWeight| = 1.5, prefire ~ 0.99
    np.testing.assert_allclose(np.abs(w["weight"]), 1.5 * 10 * 100 / 1000, rtol=0.06)
    # the skim equals the selection run directly on the file
    direct = run_selections([str(universe["files"]["wplus_munu"])], ["w"], norm=1.0, progress=False)["w"]
    np.testing.assert_array_equal(w["mu_pt"], direct["columns"]["mu_pt"])
    cf = read_cutflow(PROFILE, "w", "data")
    assert cf["cutflow"]["all events"][0] == 3000   # the empty file adds nothing
    assert universe["index"]["jpsi"]["data"]["n_rows"] == len(read_skim(PROFILE, "jpsi", "data")["mass"]) > 0
    with pytest.raises(FileNotFoundError, match="samples are"):
        read_skim(PROFILE, "w", "nonexistent")
    with pytest.raises(ValueError, match="unknown selection"):
        read_skim(PROFILE, "x", "data")


class _Scale(C.Correction):
    """A toy muon scale: pT × (1 + a) for simulation, and a weight with one variation."""

    name = "toyscale"
    kinds = ("muon", "weight")

    def __init__(self, a: float) -> None:
        self.a = a

    def applies_to(self, sample):
        return not sample.is_data

    def correct(self, columns, sample):
        for p in sample.muon_prefixes:
            columns[f"{p}_pt"] = columns[f"{p}_pt"] * (1 + self.a)

    def weights(self, columns, sample):
        n = len(columns["weight"])
        return C.WeightSet(nominal=np.full(n, 2.0), variations={"toyUp": np.full(n, 3.0), "toyDown": np.ones(n)},
                           groups={"toy": "muonEfficiency"})


def test_histogram_skim_applies_corrections_and_recomputes(universe):
    axes = [hist.axis.Regular(30, 26, 56, name="pt"), hist.axis.Regular(48, -2.4, 2.4, name="eta"),
            hist.axis.IntCategory([-1, 1], name="charge")]
    fields = ["mu_pt", "mu_eta", "mu_charge"]
    h0 = histogram_skim(PROFILE, "w", "wplus_munu", axes, fields, corrections=None)
    h1 = histogram_skim(PROFILE, "w", "wplus_munu", axes, fields, corrections=[_Scale(0.05)],
                        variations=["prefire", "lhe_scale", "lhe_pdf"])
    assert list(h1.axes["syst"])[:3] == ["nominal", "toyUp", "toyDown"]
    assert "pdf5Up" in list(h1.axes["syst"]) and "muR2_muF2" in list(h1.axes["syst"])
    assert h1.metadata["corrections"] == ["toyscale"]
    assert h1.metadata["groups"]["toy"] == "muonEfficiency"
    # reference: the same chain written out by hand
    cols = read_skim(PROFILE, "w", "wplus_munu")
    ux = -(cols["met_pt"] * np.cos(cols["met_phi"]) + cols["mu_pt"] * np.cos(cols["mu_phi"]))
    uy = -(cols["met_pt"] * np.sin(cols["met_phi"]) + cols["mu_pt"] * np.sin(cols["mu_phi"]))
    pt = cols["mu_pt"].astype(np.float64) * 1.05
    mx, my = pt * np.cos(cols["mu_phi"]), pt * np.sin(cols["mu_phi"])
    ex, ey = -(ux + mx), -(uy + my)
    mt = np.sqrt(2 * pt * np.hypot(ex, ey) * (1 - np.cos(cols["mu_phi"] - np.arctan2(ey, ex))))
    sel = (pt > 26) & (pt < 56) & (cols["mu_iso"] < 0.15) & (mt > 40) & cols["veto_pass"]
    ref = hist.Hist(*axes, storage=hist.storage.Weight())
    ref.fill(pt[sel], cols["mu_eta"][sel], cols["mu_charge"][sel], weight=2.0 * cols["weight"][sel])
    np.testing.assert_allclose(h1[..., "nominal"].view(flow=True)["value"], ref.view(flow=True)["value"], rtol=1e-10)
    np.testing.assert_allclose(h1[..., "toyUp"].values(), 1.5 * h1[..., "nominal"].values(), rtol=1e-12)
    assert h1.metadata["n_events"] == int(sel.sum())
    # the corrected selection differs from the uncorrected one (the scale moves events across cuts)
    assert h0[..., "nominal"].sum().value != pytest.approx(h1[..., "nominal"].sum().value / 2)
    # data: the correction does not apply
    hd = histogram_skim(PROFILE, "w", "data", axes, fields, corrections=[_Scale(0.05)])
    assert hd.metadata["corrections"] == [] and list(hd.axes["syst"]) == ["nominal"]


def test_corrections_are_discovered_from_manifests(universe, tmp_path):
    chapter = universe["root"] / PROFILE / "02_toy"
    write_json(chapter / "toy.json", {"a": 0.0})
    C.publish(chapter, C.Manifest(name="toyscale", chapter="02_toy", kinds=("muon", "weight"),
                                  factory="wmnb.engine.testing:load_toy_scale", artefact="toy.json"))
    try:
        cols, w, var, info = corrected_columns(PROFILE, "w", "wplus_munu")
        assert info["corrections"] == ["toyscale"] and set(var) == {"toyUp", "toyDown"}
        cols2, w2, _, info2 = corrected_columns(PROFILE, "w", "wplus_munu", exclude_chapters=("02_toy",))
        assert info2["corrections"] == []
        np.testing.assert_allclose(w, 2 * w2)
    finally:
        import shutil

        shutil.rmtree(chapter)


def test_wlike_reversed_and_abcd_fields(universe):
    ax = [hist.axis.Regular(10, 0, 120, name="mt")]
    cols, w, _, _ = corrected_columns(PROFILE, "wlike", "z_mumu", corrections=None, final_cuts=None)
    cols_r, _, _, _ = corrected_columns(PROFILE, "wlike", "z_mumu", corrections=None, final_cuts=None,
                                        wlike_reversed=True)
    np.testing.assert_allclose(cols_r["mt"], cols["alt_mt"], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(cols["mt"], read_skim(PROFILE, "wlike", "z_mumu")["mt"], rtol=1e-5, atol=1e-3)
    h = histogram_skim(PROFILE, "wlike", "z_mumu", ax, ["mt"], corrections=None)
    assert h[..., "nominal"].sum(flow=True).value > 0
    reg = hist.axis.Integer(0, 6, name="region", underflow=False, overflow=False)
    hw = histogram_skim(PROFILE, "w", "data", [reg], ["abcd_region"], corrections=None, final_cuts=None)
    cols = read_skim(PROFILE, "w", "data")
    from wmnb.engine import abcd_region
    np.testing.assert_array_equal(hw[:, "nominal"].values(), np.bincount(abcd_region(cols)[abcd_region(cols) >= 0],
                                                                          minlength=6))


def test_dask_equals_local(universe, tmp_path):
    """Identical histograms and skims with the local executor and a 2-worker LocalCluster."""
    from wmnb.engine.executors import dask_client

    files = [str(universe["files"]["wplus_munu"]), str(universe["files"]["z_mumu"])]
    axes = [hist.axis.Regular(30, 26, 56, name="pt"), hist.axis.Regular(48, -2.4, 2.4, name="eta"),
            hist.axis.IntCategory([-1, 1], name="charge")]
    fields = ["mu_pt", "mu_eta", "mu_charge"]
    local = histogram_files(files, "w", axes, fields, step=900, variations=["lhe_pdf"], progress=False)
    with dask_client(None, n_workers=2) as client:
        dask = histogram_files(files, "w", axes, fields, step=900, variations=["lhe_pdf"], executor="dask",
                               client=client, progress=False)
        sk_d = run_selections(files, ["z", "wlike"], step=900, executor="dask", client=client, progress=False)
    sk_l = run_selections(files, ["z", "wlike"], step=900, progress=False)
    assert local[..., "nominal"].sum(flow=True).value > 0
    np.testing.assert_array_equal(local.view(flow=True)["value"], dask.view(flow=True)["value"])
    np.testing.assert_array_equal(local.view(flow=True)["variance"], dask.view(flow=True)["variance"])
    for sel in ("z", "wlike"):
        assert sk_l[sel]["cutflow"] == sk_d[sel]["cutflow"]
        for k, v in sk_l[sel]["columns"].items():
            np.testing.assert_array_equal(v, sk_d[sel]["columns"][k])


def test_chapter_helpers_on_toy_universe(universe):
    from wmnb.selection import chapter as ch01

    hists = ch01.control_histograms(PROFILE)
    assert set(hists["w_mu_pt"]) == {"wplus_munu", "z_mumu", "data"}
    assert set(hists["jpsi_mass"]) == {"jpsi", "data"}
    # the N-1 W pT histogram equals a direct count with the other cuts
    cols = read_skim(PROFILE, "w", "data")
    sel = cols["veto_pass"] & (cols["mu_iso"] < 0.15) & (cols["mt"] > 40) & (cols["mu_pt"] >= 20) & (cols["mu_pt"] < 64)
    assert hists["w_mu_pt"]["data"].sum().value == pytest.approx(sel.sum())
    table = ch01.cutflow_table(PROFILE, "w")
    assert table.splitlines()[0] == "| cut | wplus_munu | z_mumu | data |"
    assert "final: mT>40" in table
    head = ch01.headline(PROFILE)
    w = read_skim(PROFILE, "w", "data")
    from wmnb.engine import w_signal_mask
    assert head["n_w_data"] == int(w_signal_mask(w).sum())
    assert head["cutflow_w_data"]["all events"] == 3000


def test_plotting_stack_ratio():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wmnb import plotting

    ax = hist.axis.Regular(10, 0, 10, name="x")
    rng = np.random.default_rng(1)
    mk = lambda n: hist.Hist(ax, storage=hist.storage.Weight()).fill(rng.uniform(0, 10, n))  # noqa: E731
    mc = plotting.group_processes({"wplus_munu": mk(500), "wminus_munu": mk(300), "z_mumu": mk(100)})
    assert set(mc) == {"wmunu", "z_mumu"} and mc["wmunu"].sum().value == 800
    fig, top, rax = plotting.stack_ratio(mc, mk(900), xlabel="x", logy=True)
    assert rax.get_ylabel() == "Data / Sim." and top.get_yscale() == "log"
    plt.close(fig)
    with pytest.raises(ValueError, match="1-D"):
        plotting.stack_ratio({"a": hist.Hist(ax, hist.axis.Regular(2, 0, 1, name="y"))})


def test_histogram_files_equals_skim_path(universe):
    """The lean direct path (chunked, fewer branches) equals selection + processing + fill."""
    from wmnb.engine import process_columns

    f = str(universe["files"]["wplus_munu"])
    axes = [hist.axis.Regular(30, 26, 56, name="pt"), hist.axis.Regular(48, -2.4, 2.4, name="eta"),
            hist.axis.IntCategory([-1, 1], name="charge")]
    fields = ["mu_pt", "mu_eta", "mu_charge"]
    h1 = histogram_files([f], "w", axes, fields, variations=["prefire", "lhe_scale"], step=700, progress=False)
    cols = run_selections([f], ["w"], progress=False)["w"]["columns"]
    c, w, v, _ = process_columns("w", "mc", cols, variations=["prefire", "lhe_scale"])
    h2 = fill(c, axes, fields, w, v)
    assert list(h1.axes["syst"]) == list(h2.axes["syst"]) and h1.axes["syst"].size == 11
    np.testing.assert_allclose(h1.view(flow=True)["value"], h2.view(flow=True)["value"], rtol=1e-12, atol=1e-12)
    assert h1[..., "nominal"].sum().value > 100
