"""The heavy steps on dask.distributed (a LocalCluster of 2 workers) give bit for bit what the local
executor gives: universe generation, selection, template building and toy fits.

Inputs are tiny (a universe of ~30 k events from the smoke profile's cards, a 4x10-bin W fit)
so that the whole module stays within about a minute on two cores; what is compared is every
array each step produces, with ``np.array_equal``.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import uproot

from wmnb.corrections import Correction, SampleInfo, Variation
from wmnb.engine import SkimChunks, run_selections, write_skim
from wmnb.engine.executors import dask_client
from wmnb.execution import active, using
from wmnb.templatefit import Axis, Binning, build_templates, make_spec
from wmnb.universe.generate import generate_universe

pytest.importorskip("distributed")

HERE = Path(__file__).resolve().parent
#: a universe of a few ten thousand events, several files per sample and chunks per file
SETTINGS = {"events_scale": 2e-6, "mc_floor": 1500, "max_produced_per_file": 1000, "chunk_size": 400,
            "signal_mc_factor": 2.0}
SEED = 7


@pytest.fixture(scope="module")
def client():
    with dask_client(None, n_workers=2) as c:
        # the workers import this module's recipe and correction by name, as they would a package's
        c.run(sys.path.insert, 0, str(HERE))
        assert len(c.scheduler_info()["workers"]) == 2
        yield c


# ---------------------------------------------------------------- 1. universe generation
@pytest.fixture(scope="module")
def universes(tmp_path_factory, client):
    root = tmp_path_factory.mktemp("dask_universes")
    local = generate_universe("smoke", out=root / "local", seed=SEED, progress=False, workers=1,
                              settings=SETTINGS, executor="local")
    dask = generate_universe("smoke", out=root / "dask", seed=SEED, progress=False, settings=SETTINGS,
                             executor="dask", client=client)
    return root, local, dask


def _events(path: Path) -> dict[str, np.ndarray]:
    return uproot.open(path)["Events"].arrays(library="np")


def _same_arrays(x: dict, y: dict, where: str) -> None:
    assert x.keys() == y.keys(), where
    for k in x:
        a, b = x[k], y[k]
        assert len(a) == len(b), (where, k)
        if a.dtype == object:            # jagged branches: one array per event
            assert all(np.array_equal(u, v, equal_nan=u.dtype.kind == "f") for u, v in zip(a, b)), (where, k)
        else:                            # NaN where a generator-level partner is missing
            assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), (where, k)


def test_generation_on_dask_writes_the_same_events(universes):
    root, local, dask = universes
    assert local["generation"]["executor"] == "local"
    assert dask["generation"]["executor"] == "dask" and dask["generation"]["workers"] == 2
    for key in ("mc", "mc_gen", "data", "closure", "cards", "seed", "events_scale"):
        assert local[key] == dask[key], key
    files = [f for s in ("mc", "mc_gen", "data", "closure") for e in local[s].values() for f in e["files"]]
    assert len(files) >= 30 and any(f.endswith("_1.root") for f in files)     # several files per sample
    for f in files:
        _same_arrays(_events(root / "local" / f), _events(root / "dask" / f), f)


# ---------------------------------------------------------------- 2. selection
@pytest.fixture(scope="module")
def w_skims(universes, client, tmp_path_factory):
    """The W skims of the local universe (the simulation's W+ and W-, the data), selected with both
    executors; written as skim files for the template tests."""
    root, man, _ = universes
    samples = {"wplus_munu": man["mc"]["wplus_munu"]["files"], "wminus_munu": man["mc"]["wminus_munu"]["files"],
               "data": man["data"]["SingleMuon"]["files"]}
    out = tmp_path_factory.mktemp("dask_skims")
    paths, results = {}, {}
    for sample, files in samples.items():
        files = [str(root / "local" / f) for f in files]
        loc = run_selections(files, ["w", "z"], step=700, progress=False)
        dsk = run_selections(files, ["w", "z"], step=700, executor="dask", client=client, progress=False)
        results[sample] = (loc, dsk)
        paths[sample] = write_skim(out / f"{sample}.root", loc["w"]["columns"])
    return paths, results


def test_selection_on_dask_selects_the_same_rows(w_skims):
    _, results = w_skims
    for sample, (loc, dsk) in results.items():
        for sel in ("w", "z"):
            assert loc[sel]["cutflow"] == dsk[sel]["cutflow"], (sample, sel)
            _same_arrays(loc[sel]["columns"], dsk[sel]["columns"], f"{sample}/{sel}")
        assert len(loc["w"]["columns"]["weight"]) > 300, sample


# ---------------------------------------------------------------- 3. template building
ETA = np.array([-2.4, -1.2, 0.0, 1.2, 2.4])


@dataclasses.dataclass(frozen=True)
class TinyWRecipe:
    """A W fit in 4 eta x 10 pT bins with the W+ and W- samples as signal, a dense and a local
    (positive-eta) built-in variation and a linear stand-in for the mass reweighting."""

    config: tuple = ()
    selection: str = "w"
    binning: Binning = Binning(Axis("eta", ETA, "mu_eta"), Axis("pt", np.linspace(26.0, 56.0, 11), "mu_pt"))
    signal: tuple[str, ...] = ("wplus_munu", "wminus_munu")
    required: tuple[str, ...] = ("mu_pt", "mu_eta", "mu_charge")
    mass_step_mev: float = 100.0
    bb_scale: float = 1.0
    mass_merge: tuple[str, int] = ("eta", 1)

    @property
    def poi_layouts(self):
        return {"mass": [("mass", "all")]}

    def process_name(self, sample):
        return sample

    def builtin_variations(self, cols, sample):
        pt = np.asarray(cols["mu_pt"], np.float64)
        yield Variation("ptSlope", "scale", 1.0 + 0.002 * (pt - 40.0), 1.0 - 0.002 * (pt - 40.0))
        rows = np.flatnonzero(np.asarray(cols["mu_eta"]) > 0)
        yield Variation("effForward", "eff", np.full(rows.size, 1.03), np.full(rows.size, 0.97), rows=rows)

    def mass_factors(self, cols, shift_mev, sample):
        return 1.0 + 2e-4 * shift_mev * (np.asarray(cols["mu_pt"], np.float64) - 38.0) / 10.0

    def builtin_sources(self):
        return []

    def region_mask(self, region):
        return np.ones(self.binning.shape, bool)

    def norms(self, process, source, float_norm):
        return [("lumi", 1.012, "lumi")]


@dataclasses.dataclass(frozen=True)
class SplitTinyWRecipe(TinyWRecipe):
    """:class:`TinyWRecipe` with the W+ sample split into two fit processes by |eta| (how
    chapter 09 splits off a signal's out-of-acceptance part)."""

    signal: tuple[str, ...] = ("wplus_munu", "wplus_central", "wminus_munu")

    def process_parts(self, sample):
        return ("wplus_munu", "wplus_central") if sample == "wplus_munu" else (sample,)

    def part_mask(self, cols, sample, part):
        central = np.abs(np.asarray(cols["mu_eta"])) < 1.0
        return central if part == "wplus_central" else ~central


class ChargeWeight(Correction):
    """A weight correction with a nominal factor and a local (negative-charge) variation."""

    name = "charge_weight"
    kinds = ("weight",)

    def applies_to(self, sample: SampleInfo) -> bool:
        return not sample.is_data

    def nominal_factor(self, columns, sample):
        return 1.0 + 0.01 * np.asarray(columns["mu_charge"], np.float64)

    def iter_variations(self, columns, sample):
        rows = np.flatnonzero(np.asarray(columns["mu_charge"]) < 0)
        yield Variation("chargeMinus", "eff", np.full(rows.size, 1.05), None, rows=rows)


def _templates(paths, executor, client=None, exclude=(), step=301, recipe=None):
    samples = {s: SkimChunks(paths[s], step, exclude=exclude) for s in ("wplus_munu", "wminus_munu")}
    return build_templates(recipe or TinyWRecipe(), samples, SkimChunks(paths["data"], step), [ChargeWeight()],
                           mass_shifts_mev=(50.0,), executor=executor, client=client)


def _assert_same_templates(a, b):
    assert np.array_equal(a.data, b.data) and a.n_data == b.n_data
    assert list(a.processes) == list(b.processes)
    for p, x in a.processes.items():
        y = b.processes[p]
        assert np.array_equal(x.nominal, y.nominal) and np.array_equal(x.sumw2, y.sumw2), p
        assert list(x.shapes) == list(y.shapes) and x.dropped == y.dropped, p
        for k, s in x.shapes.items():
            t = y.shapes[k]
            assert np.array_equal(s.up, t.up) and np.array_equal(s.down, t.down), (p, k)
            assert (s.bins is None and t.bins is None) or np.array_equal(s.bins, t.bins), (p, k)
        assert all(np.array_equal(u, v) for u, v in zip(x.mass_halves, y.mass_halves)), p
    for name in ("mass_up", "mass_down"):
        assert all(np.array_equal(v, getattr(b, name)[p]) for p, v in getattr(a, name).items())
    assert a.mass_scan.keys() == b.mass_scan.keys()
    for s, per in a.mass_scan.items():
        assert all(np.array_equal(v, b.mass_scan[s][p]) for p, v in per.items())


@pytest.fixture(scope="module")
def templates(w_skims, client):
    paths, _ = w_skims
    return _templates(paths, "local"), _templates(paths, "dask", client)


def test_templates_on_dask_are_bit_identical(templates, w_skims):
    local, dask = templates
    _assert_same_templates(local, dask)
    p = local.processes["wplus_munu"]
    assert {"ptSlope", "effForward", "chargeMinus"} <= set(p.shapes)
    assert p.shapes["effForward"].bins is not None          # the sparse path went through the tasks
    assert SkimChunks(w_skims[0]["wplus_munu"], 301).ranges()[1] == (301, 602)
    assert len(SkimChunks(w_skims[0]["wplus_munu"], 301).ranges()) >= 3   # several chunks per sample


def test_templates_split_by_row_parity_are_bit_identical(w_skims, client):
    """Without the ``event`` column the even/odd halves follow the row number across chunks: a
    chunk filled alone on a worker must be reassembled exactly (odd chunk size: the halves swap)."""
    paths, _ = w_skims
    local = _templates(paths, "local", exclude=("event",))
    dask = _templates(paths, "dask", client, exclude=("event",))
    _assert_same_templates(local, dask)
    one_pass = _templates(paths, "local", exclude=("event",), step=10**7)
    for p in local.signal:     # the same split as one pass over the sample (up to the additions' rounding)
        for h, g in zip(local.processes[p].mass_halves, one_pass.processes[p].mass_halves):
            np.testing.assert_allclose(h, g, rtol=1e-12, atol=1e-12)
        assert not np.allclose(*local.processes[p].mass_halves)


def test_a_sample_split_into_processes_adds_up_and_is_bit_identical_on_dask(templates, w_skims, client):
    paths, _ = w_skims
    local = _templates(paths, "local", recipe=SplitTinyWRecipe())
    _assert_same_templates(local, _templates(paths, "dask", client, recipe=SplitTinyWRecipe()))
    whole, a, b = templates[0].processes["wplus_munu"], local.processes["wplus_munu"], local.processes["wplus_central"]
    assert list(local.processes) == ["wplus_munu", "wplus_central", "wminus_munu"]
    assert 0.2 < b.nominal.sum() / whole.nominal.sum() < 0.8
    np.testing.assert_allclose(a.nominal + b.nominal, whole.nominal, rtol=1e-12)
    np.testing.assert_allclose(local.mass_up["wplus_munu"] + local.mass_up["wplus_central"],
                               templates[0].mass_up["wplus_munu"], rtol=1e-12)
    for n in whole.shapes:
        np.testing.assert_allclose(a.varied(n)[0] + b.varied(n)[0], whole.varied(n)[0], rtol=1e-12, err_msg=n)


def test_the_process_executor_is_what_build_templates_uses(w_skims, client):
    """``executor=None`` follows :func:`wmnb.execution.active` (set by a notebook's parameters)."""
    paths, _ = w_skims
    seen = []

    class Spy:
        def map(self, *args, **kwargs):
            seen.append(len(args[2]))
            return client.map(*args, **kwargs)

        def scatter(self, *args, **kwargs):
            return client.scatter(*args, **kwargs)

        def cancel(self, *args, **kwargs):
            return client.cancel(*args, **kwargs)

    with using("dask", "tcp://nowhere:1"):
        assert active().executor == "dask"
        _templates(paths, None, Spy())
    assert active().executor == "local" and seen and seen[0] >= 6


# ---------------------------------------------------------------- 4. toys
def _fitter_or_skip():
    from wmnb.templatefit.fitting import fitter_available

    if not fitter_available():
        pytest.skip("wmnb.fit (TensorFlow) not importable")


def test_coverage_toys_on_dask_are_bit_identical(client):
    _fitter_or_skip()
    from wmnb.fit import toys
    from wmnb.fit.toymodels import wmass_toy

    model, _ = wmass_toy(n_events=20_000, neta=2, npt=6, yield_w=5e4, n_eff=1, seed=4)
    local = toys(model, 6, seed=9, poi="mass")
    dask = toys(model, 6, seed=9, poi="mass", executor="dask", client=client)
    assert local["converged"].all()
    for k in local:
        assert np.array_equal(local[k], dask[k], equal_nan=True), k
    assert np.unique(local["values"]).size == 6          # six different pseudo-experiments


def test_gof_toys_and_random_starts_on_dask_are_bit_identical(templates, client):
    _fitter_or_skip()
    from wmnb.templatefit.fitting import gof_toys, random_starts, run_fit

    ts = templates[0]
    spec = make_spec(ts)
    nominal = run_fit(spec)
    local = gof_toys(spec, nominal, 4, seed=3)
    dask = gof_toys(spec, nominal, 4, seed=3, executor="dask", client=client)
    assert local == dask and len(set(local["q_toys"])) == 4
    ref = nominal.values["mass"]
    starts_local = random_starts(ts, 3, seed=5, reference_mev=ref)
    starts_dask = random_starts(ts, 3, seed=5, reference_mev=ref, executor="dask", client=client)
    assert starts_local == starts_dask and len(starts_local) == 3


# ---------------------------------------------------------------- the profile's executor reaches the steps
def test_a_notebook_s_parameters_choose_the_executor():
    """``notebook_config`` (every notebook's first call) makes the profile's ``executor`` and
    ``dask_scheduler`` the process's choice; a bad value is an error naming the parameter."""
    from wmnb.chapters import get_chapter
    from wmnb.execution import activate
    from wmnb.params import ParameterError, notebook_config

    chapter = get_chapter("08_mw_fit")
    namespace = {p.name: p.default for p in chapter.parameters or ()}
    namespace.update(profile="smoke", seed=1, executor="dask", dask_scheduler="tcp://scheduler:8786")
    try:
        notebook_config(chapter.id, namespace)
        assert (active().executor, active().scheduler) == ("dask", "tcp://scheduler:8786")
        with pytest.raises(ParameterError, match="'executor'"):
            notebook_config(chapter.id, {**namespace, "executor": "slurm"})
        assert active().executor == "dask"           # a refused value changes nothing
        notebook_config(chapter.id, {**namespace, "executor": "local", "dask_scheduler": None})
        assert active().executor == "local" and active().scheduler is None
    finally:
        activate("local")


def test_a_gateway_scheduler_names_what_it_needs():
    from wmnb.engine.executors import connect

    with pytest.raises(ValueError, match="cluster's name"):
        connect("dask-gateway: ")
    try:
        import dask_gateway  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="dask_scheduler 'dask-gateway:mine' needs the dask-gateway package"):
            connect("dask-gateway:mine")
