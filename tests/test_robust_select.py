"""``wmnb select`` and the NanoAOD reader on bad input: truncated files, NaN/inf in any branch,
a file given twice, directories, an unwritable ``--out``, NanoAOD v15 naming, non-ROOT files.

Every bad input ends in an error naming the file (and branch or argument), exit status 2 from
the command line, and nothing written."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from wmnb.engine import NanoAODError, histogram_files, run_selections
from wmnb.engine import cli as select_cli
from wmnb.engine.cli import cli_select
from wmnb.engine.nanoaod import (
    MET_NAMING,
    check_baskets,
    met_branches,
    open_tree,
    selection_branches,
)
from wmnb.engine.testing import rewrite_nanoaod, write_toy_nanoaod

TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "nanoaod"
if not TESTDATA.is_dir():
    TESTDATA = Path("/work/shared/testdata/nanoaod")
NANO = TESTDATA / "nano_dy.root"
needs_real = pytest.mark.skipif(not NANO.is_file(), reason="real NanoAOD test files not available")

SINGLE_MUON = ["w", "z", "wlike", "tnp"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """A small synthetic simulation file, compressed like the chapter-00 samples."""
    return write_toy_nanoaod(tmp_path_factory.mktemp("toy") / "toy.root", 1500, seed=11, compression="zstd")


def _select(files, selection="w", **kw):
    return run_selections([str(f) for f in files], [selection], progress=False, **kw)[selection]


def _cli(*args) -> int:
    return cli_select(["--quiet", *map(str, args)])


# ---------------------------------------------------------------------------------------------
# 1. truncated files

@pytest.mark.parametrize("cut", [1, 2_000, 5_000, 10_000])
def test_truncated_tail_of_synthetic_file(toy, tmp_path, capsys, cut):
    """The last kilobytes of an uproot-written file hold ``Runs``, the class descriptions and the
    free-segment list, none of which the ``Events`` baskets need: it used to be read with rc 0."""
    data = toy.read_bytes()
    bad = tmp_path / f"cut{cut}.root"
    bad.write_bytes(data[:-cut])
    with pytest.raises(NanoAODError, match=rf"cut{cut}.root is truncated.*{cut} missing"):
        _select([bad])
    out = tmp_path / "out"
    assert _cli("--selection", "z", bad, "--out", out) == 2
    assert f"cut{cut}.root is truncated" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("cut", [2_000, 10_000])
def test_zeroed_tail_is_damaged(toy, tmp_path, cut):
    """Same length as promised, but the end overwritten (a preallocated, interrupted download)."""
    data = toy.read_bytes()
    bad = tmp_path / "zeroed.root"
    bad.write_bytes(data[:-cut] + bytes(cut))
    with pytest.raises(NanoAODError, match=r"zeroed.root: the end of the file is damaged"):
        _select([bad])


@needs_real
@pytest.mark.parametrize("cut", [2_000, 5_000, 10_000])
def test_truncated_tail_of_real_nanoaod(tmp_path, cut):
    bad = tmp_path / "nano_cut.root"
    bad.write_bytes(NANO.read_bytes()[:-cut])
    with pytest.raises(NanoAODError, match=r"nano_cut.root is truncated"):
        _select([bad], "z")


def test_baskets_beyond_the_end_name_file_and_branch(toy):
    """The basket check on its own (the header check usually fires first): a file size that ends
    inside the baskets of the last branch written."""
    tree = open_tree(toy)
    check_baskets(str(toy), tree, ["Muon_pt", "MET_pt"])          # intact: silent
    last = max(tree.keys(), key=lambda k: int(np.max(tree[k].member("fBasketSeek"))))
    seek = int(np.max(tree[last].member("fBasketSeek")))
    with pytest.raises(NanoAODError, match=rf"toy.root: basket \d+ of branch '{last}'.*truncated"):
        check_baskets(str(toy), tree, [last], size=seek + 10)


# ---------------------------------------------------------------------------------------------
# 2. NaN / inf in any float branch the selection reads

def _poison(branch: str, n: int, value: float = np.nan, seed: int = 0):
    """A ``modify`` callback putting ``value`` into ``n`` random entries of ``branch``."""
    def modify(arrays):
        arr = arrays[branch]
        flat = ak.to_numpy(ak.flatten(arr, axis=None)).copy()
        idx = np.random.default_rng(seed).choice(flat.size, n, replace=False)
        flat[idx] = value
        arrays[branch] = ak.unflatten(flat, ak.num(arr)) if arr.ndim > 1 else flat
    return modify


def test_nan_isolation_is_an_error_naming_branch_and_count(toy, tmp_path, capsys):
    bad = rewrite_nanoaod(toy, tmp_path / "iso.root", modify=_poison("Muon_pfRelIso04_all", 42))
    with pytest.raises(NanoAODError, match=r"iso.root: branch 'Muon_pfRelIso04_all' holds 42 non-finite"):
        _select([bad])
    assert _cli("--selection", "w", bad, "--out", tmp_path / "o") == 2
    assert "'Muon_pfRelIso04_all' holds 42" in capsys.readouterr().err


def test_nan_isolation_skip_drops_and_counts_events(toy, tmp_path):
    bad = rewrite_nanoaod(toy, tmp_path / "iso.root", modify=_poison("Muon_pfRelIso04_all", 42))
    res = _select([bad], nonfinite="skip")
    cf = res["cutflow"]
    iso = uproot.open(bad)["Events"]["Muon_pfRelIso04_all"].array()
    n_bad_events = int(ak.sum(ak.any(~np.isfinite(iso), axis=1)))
    assert cf["all events"][0] - cf["finite inputs"][0] == n_bad_events > 0
    assert np.all(np.isfinite(res["columns"]["mu_iso"]))
    assert any("Muon_pfRelIso04_all" in n and "dropped" in n for n in res["notes"])


def test_nan_electron_pt_no_longer_changes_the_veto_silently(toy, tmp_path):
    bad = rewrite_nanoaod(toy, tmp_path / "ele.root", modify=_poison("Electron_pt", 5, np.inf))
    with pytest.raises(NanoAODError, match=r"ele.root: branch 'Electron_pt' holds 5 non-finite"):
        _select([bad])
    good = _select([toy])
    skipped = _select([bad], nonfinite="skip")
    dropped = good["cutflow"]["all events"][0] - skipped["cutflow"]["finite inputs"][0]
    assert 1 <= dropped <= 5


@pytest.mark.parametrize("branch", ["L1PreFiringWeight_Nom", "GenPart_pt", "LHEPdfWeight", "Muon_dxy"])
def test_nan_in_other_branches_read(toy, tmp_path, branch):
    bad = rewrite_nanoaod(toy, tmp_path / "nan.root", modify=_poison(branch, 3))
    with pytest.raises(NanoAODError, match=rf"nan.root: branch '{branch}' holds 3 non-finite"):
        _select([bad], "z")


def test_nan_in_several_branches_lists_them_all(toy, tmp_path):
    def modify(arrays):
        _poison("Muon_dz", 2)(arrays)
        _poison("MET_phi", 4)(arrays)
    bad = rewrite_nanoaod(toy, tmp_path / "two.root", modify=modify)
    with pytest.raises(NanoAODError, match=r"two.root") as exc:
        _select([bad])
    assert "'Muon_dz' (2)" in str(exc.value) and "'MET_phi' (4)" in str(exc.value)


def test_nan_in_a_branch_not_read_is_ignored(toy, tmp_path):
    """Only what the selection reads is checked: a NaN in an unused branch changes nothing."""
    bad = rewrite_nanoaod(toy, tmp_path / "unused.root", modify=_poison("Muon_mass", 10))
    assert len(_select([bad])["columns"]["mu_pt"]) == len(_select([toy])["columns"]["mu_pt"])


# ---------------------------------------------------------------------------------------------
# 3. the same file twice

def test_same_file_twice_is_refused(toy, tmp_path, capsys, monkeypatch):
    link = tmp_path / "link.root"
    os.symlink(toy, link)
    hard = tmp_path / "hard.root"
    try:
        os.link(toy, hard)
    except OSError:   # another file system: only the symlink and the relative path
        hard = None
    monkeypatch.chdir(toy.parent)
    for other in [toy, link, Path("toy.root"), Path("..") / toy.parent.name / "toy.root", hard]:
        if other is None:
            continue
        with pytest.raises(NanoAODError, match=r"same file.*counted twice"):
            _select([toy, other])
        with pytest.raises(NanoAODError, match=r"same file"):
            histogram_files([str(toy), str(other)], "w", [], [], progress=False)
    assert _cli("--selection", "w", toy, link, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "toy.root" in err and "link.root" in err and "same file" in err
    assert not (tmp_path / "o").exists()


def test_byte_copy_is_refused(toy, tmp_path):
    copy = shutil.copy(toy, tmp_path / "copy.root")
    with pytest.raises(NanoAODError, match=r"copies of the same ROOT file"):
        _select([toy, copy])


def test_distinct_files_are_fine(toy, tmp_path):
    other = write_toy_nanoaod(tmp_path / "other.root", 300, seed=12, compression="zstd")
    both = _select([toy, other])
    assert both["cutflow"]["all events"][0] == 1800


# ---------------------------------------------------------------------------------------------
# 4. a directory as FILE

def test_directory_as_file(toy, tmp_path, capsys):
    assert _cli("--selection", "w", toy.parent, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert f"{toy.parent} is a directory" in err and "*.root" in err and "does not exist" not in err


def test_unmatched_wildcard(tmp_path, capsys):
    assert _cli("--selection", "w", tmp_path / "*.root", "--out", tmp_path / "o") == 2
    assert "wildcard" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# 5. --out checked before the work

def _no_selection(*args, **kw):
    raise AssertionError("the selection ran although --out is unusable")


@pytest.mark.parametrize("case", ["file", "parent_is_file", "target_is_dir"])
def test_out_checked_before_the_selection(toy, tmp_path, capsys, monkeypatch, case):
    monkeypatch.setattr(select_cli, "run_selections", _no_selection)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = {"file": blocker, "parent_is_file": blocker / "sub", "target_is_dir": tmp_path / "o"}[case]
    if case == "target_is_dir":
        (out / "w.root").mkdir(parents=True)
    assert _cli("--selection", "w", toy, "--out", out) == 2
    err = capsys.readouterr().err
    assert "--out" in err and str(out) in err


def test_out_created_when_missing(toy, tmp_path):
    out = tmp_path / "a" / "b"
    assert _cli("--selection", "w", toy, "--out", out) == 0
    assert (out / "w.root").is_file() and (out / "w.cutflow.json").is_file()


# ---------------------------------------------------------------------------------------------
# 6. NanoAOD v15 naming: MET_* -> PFMET_*

V15_RENAME = {"MET_pt": "PFMET_pt", "MET_phi": "PFMET_phi", "MET_sumEt": "PFMET_sumEt"}
V15_TYPES = {"Muon_charge": np.int16, "Muon_genPartIdx": np.int16, "Electron_cutBased": np.uint8,
             "PV_npvs": np.uint8, "PV_npvsGood": np.uint8, "GenPart_genPartIdxMother": np.int16,
             "TrigObj_id": np.uint16}


def _branches_read(path) -> list[str]:
    tree = uproot.open(path)["Events"]
    available = set(tree.keys())
    out: set[str] = set()
    for sel in ("w", "z", "tnp"):
        req, opt = selection_branches(sel, available, "genWeight" in available, str(path))
        out |= {b for b in (*req, *opt) if b in available}
    return sorted(out)


def _distractors(arrays):
    """Other MET flavours of v15 with values that would change the results if they were used (the
    PUPPI MET is stored as a recoil feature in its own skim columns, which may differ; no other
    column may move)."""
    n = len(arrays["PFMET_pt"])
    for name in ("PuppiMET", "DeepMETResolutionTune", "RawPFMET"):
        arrays[f"{name}_pt"] = np.full(n, 999.0, np.float32)
        arrays[f"{name}_phi"] = np.zeros(n, np.float32)


def _same_results(a_files, b_files):
    for sel in SINGLE_MUON:
        a = run_selections(list(map(str, a_files)), [sel], progress=False)[sel]
        b = run_selections(list(map(str, b_files)), [sel], progress=False)[sel]
        assert set(a["columns"]) == set(b["columns"]), sel
        for k in a["columns"]:
            if k.startswith("puppimet_") and k != "puppimet_sumet":
                continue      # the distractor's values, kept as a feature
            np.testing.assert_array_equal(a["columns"][k], b["columns"][k], err_msg=f"{sel}: {k}")
        if sel in ("w", "z") and "puppimet_pt" in b["columns"]:   # W-like: mu2 added
            assert np.all(b["columns"]["puppimet_pt"] == 999.0), sel
        assert a["cutflow"] == b["cutflow"]
        assert any("PFMET_pt" in n for n in b["notes"])


@needs_real
def test_real_nanoaod_in_v15_naming(tmp_path):
    v15 = rewrite_nanoaod(NANO, tmp_path / "nano_v15.root", branches=_branches_read(NANO) + ["MET_sumEt"],
                          rename=V15_RENAME, cast=V15_TYPES, modify=_distractors)
    keys = set(uproot.open(v15)["Events"].keys())
    assert "MET_pt" not in keys and {"PFMET_pt", "PuppiMET_pt", "DeepMETResolutionTune_pt"} <= keys
    _same_results([NANO], [v15])


def test_synthetic_file_in_v15_naming(toy, tmp_path):
    v15 = rewrite_nanoaod(toy, tmp_path / "toy_v15.root", rename=V15_RENAME, cast=V15_TYPES, modify=_distractors,
                          drop=("L1PreFiringWeight_Nom", "L1PreFiringWeight_Up", "L1PreFiringWeight_Dn",
                                "HLT_IsoTkMu24"))
    ref = rewrite_nanoaod(toy, tmp_path / "toy_v14.root",
                          drop=("L1PreFiringWeight_Nom", "L1PreFiringWeight_Up", "L1PreFiringWeight_Dn",
                                "HLT_IsoTkMu24"))
    _same_results([ref], [v15])
    assert len(_select([v15])["columns"]["met_pt"]) > 0


def test_met_naming_preference_and_missing_met(toy, tmp_path):
    assert MET_NAMING[0][:2] == ("MET_pt", "MET_phi") and MET_NAMING[1][:2] == ("PFMET_pt", "PFMET_phi")
    assert met_branches({"MET_pt", "MET_phi", "PFMET_pt", "PFMET_phi"}) == ("MET_pt", "MET_phi")
    assert met_branches({"PFMET_pt", "PFMET_phi", "PuppiMET_pt", "PuppiMET_phi"}) == ("PFMET_pt", "PFMET_phi")
    nomet = rewrite_nanoaod(toy, tmp_path / "nomet.root", rename={"MET_pt": "PuppiMET_pt", "MET_phi": "PuppiMET_phi"})
    with pytest.raises(NanoAODError, match=r"nomet.root.*MET_pt/MET_phi.*PFMET_pt/PFMET_phi"):
        _select([nomet])
    # the onia selections need no MET at all
    assert run_selections([str(nomet)], ["jpsi"], progress=False)["jpsi"]["cutflow"]["all events"][0] == 1500


# ---------------------------------------------------------------------------------------------
# 7. other bad input: exit status 2 and a message naming the file or argument

def test_not_a_root_file(tmp_path, capsys):
    text = tmp_path / "notes.root"
    text.write_text("hello\n" * 50)
    empty = tmp_path / "empty.root"
    empty.write_bytes(b"")
    assert _cli("--selection", "w", text, "--out", tmp_path / "o") == 2
    assert "notes.root is not a ROOT file" in capsys.readouterr().err
    assert _cli("--selection", "w", empty, "--out", tmp_path / "o") == 2
    assert "empty.root is empty" in capsys.readouterr().err


def test_events_is_not_a_ttree(tmp_path, capsys):
    p = tmp_path / "str.root"
    with uproot.recreate(p) as f:
        f["Events"] = "not a tree"
    assert _cli("--selection", "w", p, "--out", tmp_path / "o") == 2
    assert "str.root: 'Events' is a TObjString, not a TTree" in capsys.readouterr().err


def test_root_file_without_events(tmp_path, capsys):
    p = tmp_path / "other.root"
    with uproot.recreate(p) as f:
        f.mktree("Other", {"x": np.float32})
    assert _cli("--selection", "w", p, "--out", tmp_path / "o") == 2
    assert "other.root has no TTree 'Events'" in capsys.readouterr().err


@pytest.mark.parametrize("args, name", [(["--step", "-5"], "--step"), (["--step", "0"], "--step"),
                                        (["--step", "1e3"], "--step"), (["--xsec-pb", "nan"], "--xsec-pb"),
                                        (["--lumi-pb", "-1"], "--lumi-pb")])
def test_bad_numbers_name_the_argument(toy, tmp_path, capsys, args, name):
    with pytest.raises(SystemExit) as exc:
        _cli("--selection", "w", toy, "--out", tmp_path / "o", *args)
    assert exc.value.code == 2
    assert f"argument {name}" in capsys.readouterr().err


def test_library_step_must_be_positive(toy):
    with pytest.raises(ValueError, match=r"step.*positive.*-3"):
        _select([toy], step=-3)


def test_collection_branch_stored_flat(toy, tmp_path):
    def flatten(arrays):
        arrays["Muon_dxy"] = np.zeros(len(arrays["MET_pt"]), np.float32)
    bad = rewrite_nanoaod(toy, tmp_path / "flat.root", modify=flatten)
    with pytest.raises(NanoAODError, match=r"flat.root: branch 'Muon_dxy' holds one value per event"):
        _select([bad])


def test_zero_sum_of_weights(toy, tmp_path, capsys):
    def zero(arrays):
        arrays["genWeight"] = np.zeros(len(arrays["genWeight"]), np.float32)
    p = rewrite_nanoaod(toy, tmp_path / "zerow.root", modify=zero, runs={"genEventSumw": np.array([0.0])})
    assert _cli("--selection", "w", p, "--out", tmp_path / "o") == 2
    assert "sum of generator weights" in capsys.readouterr().err


def test_good_input_unchanged_exit_status(toy, tmp_path, capsys):
    assert _cli("--selection", "z", toy, "--out", tmp_path / "o") == 0
    assert "wrote" in capsys.readouterr().out


def test_write_failure_is_exit_1(toy, tmp_path, capsys, monkeypatch):
    """Input fine, output not writable after all (disk full ...): status 1, the reason printed."""
    def full(*args, **kw):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(select_cli, "write_skim", full)
    assert _cli("--selection", "w", toy, "--out", tmp_path / "o") == 1
    assert "No space left on device" in capsys.readouterr().err
