"""Reading real CMS NanoAOD and bad inputs: clear errors naming file and branch, nothing half-written."""
from __future__ import annotations

import shutil
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from wmnb.engine import NanoAODError, run_selections
from wmnb.engine.cli import cli_select
from wmnb.engine.skims import read_skim_file
from wmnb.engine.testing import write_toy_nanoaod

TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "nanoaod"
if not TESTDATA.is_dir():
    TESTDATA = Path("/work/shared/testdata/nanoaod")
NANO = TESTDATA / "nano_dy.root"
EMPTY = TESTDATA / "nano_dy_empty.root"
needs_real = pytest.mark.skipif(not NANO.is_file(), reason="real NanoAOD test files not available")


@needs_real
def test_real_nanoaod_finds_the_z_peak():
    res = run_selections([str(NANO)], ["z", "wlike", "w", "tnp"], progress=False)
    z = res["z"]["columns"]
    assert len(z["mass"]) >= 3
    assert np.all((z["mass"] > 80) & (z["mass"] < 100)), z["mass"]
    assert abs(np.median(z["mass"]) - 91.19) < 4
    # generator-level boson from GenPart (no GenV_* in real NanoAOD) agrees with the reco mass
    assert np.all(np.abs(z["gen_mass"] - z["mass"]) < 5)
    assert z["lhe_scale"].shape == (len(z["mass"]), 9) and z["lhe_pdf"].shape[1] == 33
    notes = " ".join(res["z"]["notes"])
    assert "TrigObj" in notes and "HLT_IsoTkMu24" in notes and "GenV_" in notes
    assert len(res["tnp"]["columns"]["mass"]) >= len(z["mass"])


@needs_real
def test_real_nanoaod_empty_file():
    res = run_selections([str(EMPTY)], ["z", "w"], progress=False)
    assert res["z"]["cutflow"]["all events"] == [0, 0.0]
    assert len(res["z"]["columns"]["mass"]) == 0
    assert res["w"]["columns"]["mu_pt"].dtype == np.float32


@needs_real
def test_cli_select_on_real_nanoaod(tmp_path, capsys):
    rc = cli_select(["--selection", "z", str(NANO), "--out", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "50<m<130" in out and "wrote" in out
    cols = read_skim_file(tmp_path / "z.root")
    assert len(cols["mass"]) >= 3
    # simulation weights normalised to the Runs tree's sum of weights (genEventSumw_ in this version)
    assert (tmp_path / "z.cutflow.json").is_file()


def test_cli_select_missing_file(tmp_path, capsys):
    rc = cli_select(["--selection", "w", str(tmp_path / "nope.root"), "--out", str(tmp_path / "out")])
    assert rc == 2   # bad input
    err = capsys.readouterr().err
    assert "nope.root" in err and "does not exist" in err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def toyfile(tmp_path_factory):
    return write_toy_nanoaod(tmp_path_factory.mktemp("toy") / "mc.root", 2000, seed=5)


def test_truncated_file(toyfile, tmp_path):
    bad = tmp_path / "truncated.root"
    data = Path(toyfile).read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(NanoAODError, match="truncated.root"):
        run_selections([str(bad)], ["w"], progress=False)


def test_corrupt_file(tmp_path):
    bad = tmp_path / "garbage.root"
    bad.write_bytes(b"root" + bytes(range(256)) * 40)
    with pytest.raises(NanoAODError, match="garbage.root.*(corrupt|truncated)"):
        run_selections([str(bad)], ["z"], progress=False)


def test_corrupt_baskets(toyfile, tmp_path):
    """A file whose header is intact but whose compressed data are damaged."""
    bad = tmp_path / "damaged.root"
    data = bytearray(Path(toyfile).read_bytes())
    rng = np.random.default_rng(0)
    start = len(data) // 10
    pos = rng.integers(start, len(data) - 2000, 400)
    for p in pos:
        data[p] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(NanoAODError, match="damaged.root"):
        run_selections([str(bad)], ["w"], progress=False)


def _rewrite(src, dst, drop=(), modify=None):
    t = uproot.open(src)["Events"]
    arrays = {k: t[k].array() for k in t.keys() if not k.startswith("n") and k not in drop}
    if modify:
        modify(arrays)
    collections: dict[str, dict] = {}
    flat = {}
    for k, v in arrays.items():
        if v.ndim > 1:
            pre, _, f = k.partition("_")
            collections.setdefault(pre, {})[f] = v
        else:
            flat[k] = v
    out = dict(flat)
    for pre, fields in collections.items():
        out[pre] = ak.zip(fields)
    with uproot.recreate(dst) as f:
        f.mktree("Events", {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in out.items()})
        f["Events"].extend(out)
    return dst


def test_missing_required_branch(toyfile, tmp_path):
    bad = _rewrite(toyfile, tmp_path / "nodxy.root", drop=("Muon_dxy",))
    with pytest.raises(NanoAODError, match=r"nodxy.root.*Muon_dxy"):
        run_selections([str(bad)], ["w"], progress=False)


def test_missing_optional_branches_fall_back(toyfile, tmp_path):
    f = _rewrite(toyfile, tmp_path / "old.root",
                 drop=("Muon_svMatched", "L1PreFiringWeight_Nom", "L1PreFiringWeight_Up", "L1PreFiringWeight_Dn",
                       "HLT_IsoTkMu24"))
    res = run_selections([str(f)], ["w"], progress=False)["w"]
    assert len(res["columns"]["mu_pt"]) > 0
    assert not res["columns"]["mu_sv"].any()
    assert any("L1PreFiringWeight" in n for n in res["notes"])
    assert any("HLT_IsoTkMu24" in n for n in res["notes"])


def test_missing_all_triggers(toyfile, tmp_path):
    f = _rewrite(toyfile, tmp_path / "notrig.root", drop=("HLT_IsoMu24", "HLT_IsoTkMu24"))
    with pytest.raises(NanoAODError, match=r"notrig.root.*HLT_IsoMu24"):
        run_selections([str(f)], ["w"], progress=False)


def _poison(arrays):
    pt = arrays["Muon_pt"]
    flat = ak.to_numpy(ak.flatten(pt)).copy()
    flat[5] = np.nan
    flat[17] = np.inf
    arrays["Muon_pt"] = ak.unflatten(flat, ak.num(pt))


def test_nonfinite_values_error_or_skip(toyfile, tmp_path):
    f = _rewrite(toyfile, tmp_path / "nan.root", modify=_poison)
    with pytest.raises(NanoAODError, match=r"nan.root.*'Muon_pt'.*non-finite"):
        run_selections([str(f)], ["w"], progress=False)
    res = run_selections([str(f)], ["w"], progress=False, nonfinite="skip")["w"]
    cf = res["cutflow"]
    assert cf["all events"][0] - cf["finite inputs"][0] in (1, 2)
    assert np.all(np.isfinite(res["columns"]["mu_pt"]))
    ref = run_selections([str(toyfile)], ["w"], progress=False)["w"]
    assert len(ref["columns"]["mu_pt"]) - len(res["columns"]["mu_pt"]) in (0, 1, 2)


def test_cli_nonfinite_writes_nothing(toyfile, tmp_path, capsys):
    f = _rewrite(toyfile, tmp_path / "nan.root", modify=_poison)
    out = tmp_path / "out"
    assert cli_select(["--selection", "w", str(f), "--out", str(out), "--quiet"]) == 2   # bad input
    assert "Muon_pt" in capsys.readouterr().err
    assert not (out / "w.root").exists()
    assert cli_select(["--selection", "w", str(f), "--out", str(out), "--quiet", "--nonfinite", "skip"]) == 0
    assert (out / "w.root").exists()


def test_not_a_nanoaod_file(tmp_path):
    p = tmp_path / "other.root"
    with uproot.recreate(p) as f:
        f.mktree("Other", {"x": np.float32})
    with pytest.raises(NanoAODError, match=r"other.root has no TTree 'Events'"):
        run_selections([str(p)], ["w"], progress=False)


def test_counter_types_do_not_matter(toyfile, tmp_path):
    """The toy writes int32 counters (uproot default), real/synthetic NanoAOD uint32: same result."""
    t = uproot.open(toyfile)["Events"]
    assert t["nMuon"].typename in ("int32_t", "uint32_t")
    copy = shutil.copy(toyfile, tmp_path / "copy.root")
    a = run_selections([str(toyfile)], ["z"], progress=False)["z"]["columns"]["mass"]
    b = run_selections([str(copy)], ["z"], step=333, progress=False)["z"]["columns"]["mass"]
    np.testing.assert_array_equal(a, b)
