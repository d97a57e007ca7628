"""``wmnb fit`` and model loading on bad input: a named error and exit code 2, never a traceback.

Each test is one case of the hardening issue: a directory or a damaged HDF5 file given as the
model, non-finite or negative yields, data or MC ``sumw2``, empty bins, and output that strict
JSON parsers reject.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from wmnb.fit import Model, ModelBuilder
from wmnb.fit import model as M
from wmnb.fit.cli import cli_fit

NBINS = 6


def tiny_model(empty_bins: tuple[int, ...] = ()) -> Model:
    """6 bins, signal ``S`` with a free normalisation ``mu``, background ``B`` with a 5 % norm."""
    sig = np.array([20.0, 60, 120, 90, 40, 10])
    bkg = np.full(NBINS, 30.0)
    sig[list(empty_bins)] = 0.0
    bkg[list(empty_bins)] = 0.0
    b = ModelBuilder(sig + bkg)
    b.add_process("S", sig, sumw2=0.2 * sig, signal=True)
    b.add_process("B", bkg, sumw2=0.5 * bkg)
    b.add_norm_poi("mu", "S")
    b.add_norm_systematic("bnorm", "B", 1.05, group="bkg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.ModelWarning)
        return b.build()


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    """A valid model file to damage."""
    return tiny_model().save(tmp_path / "model.h5")


def strict_loads(text: str) -> object:
    """``json.loads`` that refuses the non-standard NaN / Infinity tokens."""
    def refuse(token: str) -> object:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def fails_with(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    """Run ``wmnb fit argv``: exit code 2 and an error line holding every needle."""
    assert cli_fit(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("wmnb fit: ") and "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def _set_dataset(path: Path, key: str, value: np.ndarray) -> None:
    with h5py.File(path, "a") as f:
        del f[key]
        f.create_dataset(key, data=value)


# ------------------------------------------------------------------ the file itself
def test_directory_is_named_as_such(tmp_path: Path, saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails_with([str(tmp_path)], capsys, "is a directory", "model.h5")


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails_with([str(tmp_path / "nope.h5")], capsys, "does not exist")


def test_not_hdf5(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "junk.h5").write_bytes(b"not an hdf5 file" * 20)
    fails_with([str(tmp_path / "junk.h5")], capsys, "junk.h5", "not a readable HDF5 model file")


def test_corrupt_meta_attribute(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with h5py.File(saved, "a") as f:
        f.attrs["meta"] = "{not json"
    fails_with([str(saved)], capsys, "'meta' attribute is not valid JSON")


def test_meta_lacks_a_key(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with h5py.File(saved, "a") as f:
        meta = json.loads(f.attrs["meta"])
        del meta["bb_mode"]
        f.attrs["meta"] = json.dumps(meta)
    fails_with([str(saved)], capsys, "lacks the key 'bb_mode'")


def test_missing_dataset(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with h5py.File(saved, "a") as f:
        del f["sumw2"]
    fails_with([str(saved)], capsys, "lacks the datasets ['sumw2']")


def test_dataset_of_strings(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _set_dataset(saved, "data", np.array([b"a"] * NBINS))
    fails_with([str(saved)], capsys, "dataset 'data' has dtype")


def test_dataset_of_wrong_length(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _set_dataset(saved, "data", np.ones(NBINS + 1))
    fails_with([str(saved)], capsys, "data has shape (7,), expected (6,)")


def test_sparse_index_out_of_range(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with h5py.File(saved, "a") as f:
        k_col = f["k_col"][()]
    k_col[0] = 10_000
    _set_dataset(saved, "k_col", k_col)
    fails_with([str(saved)], capsys, "k_col indices must lie in [0, 12)")


# ------------------------------------------------------------------ values: validate() on load
@pytest.mark.parametrize(("key", "index", "value", "needles"), [
    ("nominal", (0, 3), np.nan, ("nominal yield of process 'S'", "bins [3]")),
    ("nominal", (1, 2), np.inf, ("nominal yield of process 'B'", "bins [2]")),
    ("nominal", (0, 4), -5.0, ("nominal yield of process 'S'", "bins [4]", "-5.0")),
    ("data", 3, np.inf, ("data must be finite", "bins [3]")),
    ("data", 1, np.nan, ("data must be finite", "bins [1]")),
    ("data", 0, -1.0, ("data must be finite", "bins [0]")),
    ("sumw2", (0, 3), -50.0, ("MC sumw2 of process 'S'", "bins [3]")),
    ("sumw2", (1, 5), np.nan, ("MC sumw2 of process 'B'", "bins [5]")),
])
def test_bad_values_are_refused_on_load(saved: Path, capsys: pytest.CaptureFixture[str], key: str,
                                        index: object, value: float, needles: tuple[str, ...]) -> None:
    with h5py.File(saved, "a") as f:
        arr = f[key][()]
    arr[index] = value
    _set_dataset(saved, key, arr)
    with pytest.raises(M.ModelError, match="model.h5"):
        Model.load(saved)
    fails_with([str(saved), "--json"], capsys, *needles)


def test_observed_events_without_expectation(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with h5py.File(saved, "a") as f:
        nominal, data = f["nominal"][()], f["data"][()]
    nominal[:, 2] = 0.0
    data[2] = 7.0
    _set_dataset(saved, "nominal", nominal)
    _set_dataset(saved, "data", data)
    fails_with([str(saved)], capsys, "zero expected yield but observed events", "bins [2]")


def test_empty_bins_warn_and_do_not_count_as_dof(tmp_path: Path) -> None:
    """Bins where every process and the data are zero: kept, a ModelWarning, not in the GOF ndf."""
    with pytest.warns(M.ModelWarning, match=r"2 of 6 bins have no expected yield and no data \(bins \[0, 5\]\)"):
        built = _build_with_empty_bins()
    path = built.save(tmp_path / "empty.h5")
    with pytest.warns(M.ModelWarning, match="bins \\[0, 5\\]"):
        m = Model.load(path)
    assert m.nbins == NBINS and list(np.flatnonzero(m.empty_bins)) == [0, 5]
    from wmnb.fit import fit

    res = fit(m, impacts=False, global_impacts=False)
    assert res.converged
    assert res.gof()[1] == NBINS - 2 - 1          # 4 filled bins, one free POI


def _build_with_empty_bins() -> Model:
    sig = np.array([0.0, 60, 120, 90, 40, 0])
    bkg = np.array([0.0, 30, 30, 30, 30, 0])
    b = ModelBuilder(sig + bkg)
    b.add_process("S", sig, sumw2=0.2 * sig, signal=True)
    b.add_process("B", bkg, sumw2=0.5 * bkg)
    b.add_norm_poi("mu", "S")
    b.add_norm_systematic("bnorm", "B", 1.05, group="bkg")
    return b.build()


def test_validate_names_the_process_for_in_memory_models() -> None:
    m = tiny_model()
    m.sumw2[1, 4] = -1.0
    with pytest.raises(M.ModelError, match="MC sumw2 of process 'B'.*bins \\[4\\]"):
        m.validate()


def test_bb_scale_option_must_be_finite(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails_with([str(saved), "--bb-scale", "nan"], capsys, "--bb-scale must be finite")


# ------------------------------------------------------------------ the neutral .npz
def _npz(path: Path, **changes: np.ndarray) -> Path:
    rng = np.random.default_rng(4)
    nominal = rng.uniform(50, 100, (2, 5))
    arrays = {"processes": np.array(["W", "Z"]), "nominal": nominal, "sumw2": 0.1 * nominal,
              "systs": np.array(["massShift", "a"]), "constrained": np.array([False, True]),
              "logk": rng.normal(0, 0.02, (2, 2, 5)), "data": nominal.sum(0)}
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


def test_npz_bad_values_and_shapes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nominal = np.full((2, 5), 60.0)
    nominal[1, 2] = np.nan
    bad = _npz(tmp_path / "nan.npz", nominal=nominal)
    fails_with([str(bad)], capsys, "nan.npz", "nominal yield of process 'Z'", "bins [2]")
    sumw2 = np.full((2, 5), 6.0)
    sumw2[0, 1] = -6.0
    fails_with([str(_npz(tmp_path / "neg.npz", sumw2=sumw2))], capsys, "MC sumw2 of process 'W'", "bins [1]")
    fails_with([str(_npz(tmp_path / "shape.npz", data=np.ones(4)))], capsys, "data has shape (4,), expected (5,)")
    (tmp_path / "junk.npz").write_bytes(b"PK not really a zip")
    fails_with([str(tmp_path / "junk.npz")], capsys, "not a readable .npz model file")


# ------------------------------------------------------------------ strict JSON output
def test_json_line_and_out_file_are_strict_json(saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A fit whose NLL or EDM is not finite: ``null``, never the ``NaN`` / ``Infinity`` tokens."""
    from wmnb.fit import fitter

    real_fit = fitter.fit

    def broken_fit(*args: object, **kwargs: object):
        res = real_fit(*args, **kwargs)
        res.nll, res.edm = float("nan"), float("inf")
        return res

    monkeypatch.setattr(fitter, "fit", broken_fit)
    out = tmp_path / "result.json"
    assert cli_fit([str(saved), "--json", "--out", str(out)]) == 0
    line = strict_loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["nll"] is None and line["edm"] is None and line["poi"] == pytest.approx(1.0, abs=0.5)
    doc = strict_loads(out.read_text())
    assert doc["nll"] is None and doc["edm"] is None


def test_json_safe_handles_numpy() -> None:
    from wmnb.fit.cli import json_safe

    obj = {"a": np.float32("nan"), "b": [np.inf, 1.5], "c": np.arange(2), "d": np.bool_(True), 3: -np.inf}
    expect = '{"a": null, "b": [null, 1.5], "c": [0, 1], "d": true, "3": null}'
    assert json.dumps(json_safe(obj), allow_nan=False) == expect


def test_the_command_line_process_exits_with_the_fit_s_code_and_its_output(tmp_path: Path, saved: Path) -> None:
    """``python -m wmnb.cli fit`` ends without the interpreter's teardown (wmnb.cli.console):
    the exit code and everything printed or written must still come out."""
    import subprocess
    import sys

    out = tmp_path / "res.json"
    ok = subprocess.run([sys.executable, "-m", "wmnb.cli", "fit", str(saved), "--json", "--out", str(out)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr[-2000:]
    line = strict_loads(ok.stdout.strip().splitlines()[-1])
    assert isinstance(line, dict) and line["converged"] and out.is_file()
    bad = subprocess.run([sys.executable, "-m", "wmnb.cli", "fit", str(tmp_path / "none.h5")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "cannot read model" in bad.stderr
