"""Exact round trip of hist.Hist objects through HDF5 (wmnb.histio)."""
from __future__ import annotations

import hist
import numpy as np
import pytest

from wmnb.histio import load_hist_attrs, load_hists, save_hists


def _filled(h: hist.Hist, rng: np.random.Generator, n: int = 5000) -> hist.Hist:
    cols = []
    for ax in h.axes:
        if isinstance(ax, hist.axis.StrCategory):
            cols.append(rng.choice(list(ax), n))
        elif isinstance(ax, hist.axis.IntCategory):
            cols.append(rng.choice(list(ax), n))
        elif isinstance(ax, hist.axis.Integer):
            cols.append(rng.integers(int(ax.edges[0]) - 1, int(ax.edges[-1]) + 1, n))
        elif isinstance(ax, hist.axis.Boolean):
            cols.append(rng.uniform(size=n) < 0.3)
        else:
            lo, hi = ax.edges[0], ax.edges[-1]
            span = hi - lo
            cols.append(rng.uniform(lo - 0.1 * span, hi + 0.1 * span, n))  # flow bins too
    if h.storage_type in (hist.storage.Weight, hist.storage.Double):
        h.fill(*cols, weight=rng.exponential(1.0, n))
    elif h.storage_type in (hist.storage.Mean, hist.storage.WeightedMean):
        h.fill(*cols, sample=rng.normal(size=n))
    else:
        h.fill(*cols)
    return h


AXES = {
    "regular": lambda: hist.axis.Regular(30, 26, 56, name="pt", label=r"$p_T$ [GeV]"),
    "regular_noflow": lambda: hist.axis.Regular(48, -2.4, 2.4, name="eta", flow=False),
    "regular_log": lambda: hist.axis.Regular(10, 1, 100, name="x", transform=hist.axis.transform.log),
    "variable": lambda: hist.axis.Variable([0, 2, 3, 5, 8, 13, 30], name="qt", label="q_T"),
    "integer": lambda: hist.axis.Integer(-1, 2, name="q", underflow=False),
    "intcat": lambda: hist.axis.IntCategory([-1, 1], name="charge"),
    "strcat": lambda: hist.axis.StrCategory(["nominal", "pdf1Up", "pdf1Down"], name="syst"),
    "boolean": lambda: hist.axis.Boolean(name="iso"),
}
STORAGES = [hist.storage.Double, hist.storage.Weight, hist.storage.Int64, hist.storage.Mean,
            hist.storage.WeightedMean]


@pytest.mark.parametrize("storage", STORAGES, ids=lambda s: s.__name__)
def test_round_trip_every_storage(tmp_path, storage):
    rng = np.random.default_rng(1)
    h = hist.Hist(AXES["regular"](), AXES["intcat"](), AXES["strcat"](), storage=storage(),
                  name="templ", label="W+", metadata={"process": "wplus", "mass_shift_mev": 100})
    _filled(h, rng)
    save_hists(tmp_path / "h.h5", {"templ": h}, attrs={"profile": "smoke"})
    back = load_hists(tmp_path / "h.h5")["templ"]
    assert back == h  # axes, storage, content including flow bins
    assert back.metadata == h.metadata and back.name == h.name and back.label == h.label
    assert back.storage_type == h.storage_type
    np.testing.assert_array_equal(back.view(flow=True), h.view(flow=True))
    assert load_hist_attrs(tmp_path / "h.h5") == {"profile": "smoke"}


@pytest.mark.parametrize("kind", sorted(AXES))
def test_round_trip_every_axis(tmp_path, kind):
    rng = np.random.default_rng(2)
    h = _filled(hist.Hist(AXES[kind](), storage=hist.storage.Weight()), rng)
    save_hists(tmp_path / "a.h5", {"h": h})
    back = load_hists(tmp_path / "a.h5")["h"]
    assert back == h
    assert back.axes[0].traits == h.axes[0].traits
    np.testing.assert_array_equal(back.axes[0].edges, h.axes[0].edges)
    np.testing.assert_array_equal(back.variances(flow=True), h.variances(flow=True))


def test_failed_write_keeps_previous_file(tmp_path):
    good = hist.Hist(AXES["regular"](), storage=hist.storage.Weight()).fill([30.0])
    save_hists(tmp_path / "h.h5", {"h": good})
    bad = hist.Hist(AXES["regular"](), metadata=object())  # not JSON-serialisable
    with pytest.raises(TypeError, match="metadata"):
        save_hists(tmp_path / "h.h5", {"h": bad})
    assert load_hists(tmp_path / "h.h5")["h"] == good
    assert [p.name for p in tmp_path.iterdir()] == ["h.h5"]  # no temporary left behind


def test_missing_and_truncated_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the chapter"):
        load_hists(tmp_path / "nope.h5")
    h = hist.Hist(AXES["regular"]()).fill([30.0])
    save_hists(tmp_path / "t.h5", {"h": h})
    data = (tmp_path / "t.h5").read_bytes()
    (tmp_path / "t.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(OSError, match="truncated"):
        load_hists(tmp_path / "t.h5")
    with pytest.raises(KeyError, match="holds"):
        save_hists(tmp_path / "u.h5", {"h": h})
        load_hists(tmp_path / "u.h5", names=["other"])
