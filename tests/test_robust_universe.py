"""Hardening of ``wmnb generate`` / ``generate_universe``: the results store is protected, bad
arguments give one named error (exit status 2) instead of a traceback, SIGTERM and dead runs
leave no temporary folders, and generation stays bit-reproducible.

Every generation here is tiny (``tiny`` fixture: ~27 k events, about a second)."""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import uproot
import yaml

from wmnb.paths import STAGE_ENV
from wmnb.universe import CardError, cli, generate, load_card
from wmnb.universe.card import FIELDS, SCHEMA, validate_card

TINY = {"mc_floor": 2000}
TINY_SCALE = 1e-5
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny(monkeypatch):
    """Shrink the smoke profile's universe to a second's work."""
    monkeypatch.setitem(generate.DEFAULTS, "smoke", {**generate.DEFAULTS["smoke"], **TINY})
    monkeypatch.setitem(generate.SCALES, "smoke", TINY_SCALE)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A results store in tmp_path holding a fake book universe for the smoke profile."""
    results = tmp_path / "results"
    book = results / "smoke" / "00_universe"
    (book / "samples").mkdir(parents=True)
    (book / "manifest.json").write_text('{"book": true}\n')
    (book / "samples" / "marker").write_text("book universe\n")
    monkeypatch.setenv("WMNB_RESULTS", str(results))
    monkeypatch.delenv(STAGE_ENV, raising=False)
    return results


def _book_untouched(results: Path) -> bool:
    book = results / "smoke" / "00_universe"
    return ((book / "manifest.json").read_text() == '{"book": true}\n'
            and sorted(p.name for p in book.rglob("*")) == ["manifest.json", "marker", "samples"])


def _generate(capsys, *args: str) -> tuple[int, str]:
    rc = cli.cli_generate([*args, "--quiet"])
    return rc, capsys.readouterr().err


# ------------------------------------------------------------------ 1. the results store

def test_cli_without_out_refuses_and_keeps_the_book_universe(store, tiny, capsys):
    rc, err = _generate(capsys, "--profile", "smoke", "--workers", "1")
    assert rc == 2
    assert "--out DIR" in err and "--into-results" in err
    assert _book_untouched(store)


@pytest.mark.parametrize("where", ["smoke/00_universe", "smoke/elsewhere", "other/00_universe", "."])
def test_out_inside_results_is_refused(store, tiny, capsys, where):
    target = store / where
    rc, err = _generate(capsys, "--profile", "smoke", "--workers", "1", "--out", str(target))
    assert rc == 2
    assert str(target) in err and "--out DIR" in err and "results store" in err
    assert _book_untouched(store)


def test_out_resolving_into_results_through_a_link_is_refused(store, tiny, tmp_path, capsys):
    link = tmp_path / "innocent"
    link.symlink_to(store / "smoke")
    rc, err = _generate(capsys, "--profile", "smoke", "--workers", "1", "--out", str(link / "00_universe"))
    assert rc == 2 and "refusing" in err
    assert _book_untouched(store)


def test_api_default_out_is_refused_outside_the_runner(store, tiny):
    with pytest.raises(generate.GenerateError, match="00_universe") as err:
        generate.generate_universe("smoke", progress=False, workers=1)
    assert "--out DIR" in str(err.value)
    assert _book_untouched(store)


def test_runner_stage_of_chapter_00_is_allowed(store, tiny, monkeypatch):
    """What notebooks/00_universe.ipynb does under the runner: no ``out``, chapter_dir points
    at the staging directory."""
    stage = store / "smoke" / ".00_universe.staging"
    stage.mkdir()
    monkeypatch.setenv(STAGE_ENV, json.dumps({"profile": "smoke", "chapter": "00_universe", "dir": str(stage)}))
    man = generate.generate_universe("smoke", seed=20161, progress=False, workers=1)
    assert (stage / "manifest.json").is_file() and man["mc"]["z_mumu"]["files"]
    assert all((stage / f).is_file() for f in man["mc"]["z_mumu"]["files"])
    assert _book_untouched(store)


@pytest.mark.parametrize("info", [
    {"profile": "smoke", "chapter": "01_selection", "dir": "STAGE"},
    {"profile": "default", "chapter": "00_universe", "dir": "STAGE"},
])
def test_stage_of_another_chapter_or_profile_is_refused(store, tiny, monkeypatch, info):
    stage = store / "smoke" / ".00_universe.staging"
    monkeypatch.setenv(STAGE_ENV, json.dumps({**info, "dir": str(stage)}))
    with pytest.raises(generate.GenerateError, match="refusing"):
        generate.generate_universe("smoke", out=stage, progress=False, workers=1)
    assert not stage.exists() and _book_untouched(store)


def test_into_results_flag_writes_the_book_universe_on_purpose(store, tiny, capsys):
    rc, err = _generate(capsys, "--profile", "smoke", "--workers", "1", "--into-results")
    assert rc == 0, err
    book = store / "smoke" / "00_universe"
    man = json.loads((book / "manifest.json").read_text())
    assert man["profile"] == "smoke" and not (book / "samples" / "marker").exists()


def test_out_outside_results_still_works(store, tiny, tmp_path, capsys):
    out = tmp_path / "mine"
    rc, err = _generate(capsys, "--profile", "smoke", "--workers", "1", "--out", str(out))
    assert rc == 0, err
    assert (out / "manifest.json").is_file() and _book_untouched(store)
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


# ------------------------------------------------------------------ 2. --truth

@pytest.mark.parametrize("kind", ["directory", "empty", "blank"])
def test_truth_directory_or_empty_says_what_it_is(tmp_path, tiny, capsys, kind):
    truth = {"directory": str(tmp_path), "empty": "", "blank": "  "}[kind]
    rc, err = _generate(capsys, "--truth", truth, "--out", str(tmp_path / "u"))
    assert rc == 2
    assert ("is a directory" if kind == "directory" else "empty") in err
    assert "does not exist" not in err
    assert "nominal, data, closure" in err
    assert not (tmp_path / "u").exists()


def test_missing_truth_lists_the_shipped_cards(tmp_path, capsys):
    rc, err = _generate(capsys, "--truth", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "u"))
    assert rc == 2 and "does not exist" in err and "nominal, data, closure" in err


# ------------------------------------------------------------------ 3. effect_seed

def test_effect_seed_must_agree_between_cards(tmp_path, tiny, capsys):
    card = copy.deepcopy(load_card("data"))
    card["physics"]["pdf"]["effect_seed"] = 7
    path = tmp_path / "other_seed.yaml"
    path.write_text(yaml.safe_dump(card))
    rc, err = _generate(capsys, "--truth", str(path), "--out", str(tmp_path / "u"), "--workers", "1")
    assert rc == 2
    assert "physics.pdf.effect_seed" in err and "nominal" in err and "2016" in err
    assert str(path) in err and "= 7" in err
    assert not (tmp_path / "u").exists()  # refused before any work


def test_effect_seed_check_names_all_cards():
    from wmnb.universe.card import check_shared_fields

    a, b = load_card("nominal"), copy.deepcopy(load_card("data"))
    check_shared_fields({"nominal": a, "data": b})
    b["physics"]["pdf"]["effect_seed"] = 3
    with pytest.raises(CardError, match=r"nominal card \(N\) = 2016, data card \(D\) = 3"):
        check_shared_fields({"nominal": a, "data": b}, {"nominal": "N", "data": "D"})


# ------------------------------------------------------------------ 4. seeds and workers

@pytest.mark.parametrize("args, word", [
    (["--seed", "-1"], "--seed"), (["--seed", "abc"], "--seed"), (["--seed", "1.5"], "--seed"),
    (["--workers", "0"], "--workers"), (["--workers", "-2"], "--workers"),
])
def test_bad_seed_or_workers_name_the_option(tmp_path, tiny, capsys, args, word):
    rc, err = _generate(capsys, *args, "--out", str(tmp_path / "u"))
    assert rc == 2
    assert word in err and "integer" in err
    assert not (tmp_path / "u").exists()


@pytest.mark.parametrize("kwargs, word", [
    ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"seed": True}, "seed"), ({"seed": "3"}, "seed"),
    ({"workers": 0}, "workers"), ({"workers": -1}, "workers"),
])
def test_api_rejects_bad_seed_or_workers(tmp_path, tiny, kwargs, word):
    with pytest.raises(generate.GenerateError, match=word):
        generate.generate_universe("smoke", out=tmp_path / "u", progress=False, **kwargs)
    assert not (tmp_path / "u").exists()


# ------------------------------------------------------------------ 5. --out not a directory

def test_out_existing_file_is_a_clear_error(tmp_path, tiny, capsys, monkeypatch):
    target = tmp_path / "a_file"
    target.write_text("not a folder\n")
    touched = []
    monkeypatch.setattr(generate, "load_card", lambda *a: touched.append(a))  # must not be reached
    for out in (target, target / "below"):
        rc, err = _generate(capsys, "--out", str(out), "--workers", "1")
        assert rc == 2 and str(target) in err and "is a file" in err
    assert not touched and target.read_text() == "not a folder\n"


# ------------------------------------------------------------------ 6. SIGTERM and stale folders

DRIVER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from wmnb.universe import cli, generate

    generate.DEFAULTS["smoke"] = {**generate.DEFAULTS["smoke"], "mc_floor": %(floor)d}
    generate.SCALES["smoke"] = %(scale)r
    pids = Path(sys.argv[2])
    real = generate.run_mc_job

    def slow(job):
        out = real(job)
        (pids / str(os.getpid())).touch()  # who is working (main process or pool worker)
        time.sleep(120)  # stuck mid-generation: the test terminates us here
        return out

    generate.run_mc_job = slow
    sys.exit(cli.cli_generate(["--profile", "smoke", "--out", sys.argv[1], "--workers", sys.argv[3], "--quiet"]))
""") % {"floor": TINY["mc_floor"], "scale": TINY_SCALE}


def _start_driver(tmp_path: Path, out: Path, workers: int) -> tuple[subprocess.Popen, Path]:
    script, pids = tmp_path / "driver.py", tmp_path / "pids"
    script.write_text(DRIVER)
    pids.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(STAGE_ENV, None)
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(pids), str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.monotonic() + 90
    while not list(pids.iterdir()):  # a first file is complete and its job is stuck
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"driver did not reach the generation: {proc.communicate()}")
        time.sleep(0.05)
    return proc, pids


def _leftovers(out: Path) -> list[Path]:
    """Temporary files and folders (hidden names, ``.tmp``) anywhere below ``out``."""
    return [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its dead parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_mid_generation_removes_the_temporary_folder(tmp_path, workers):
    out = tmp_path / "u"
    proc, pids = _start_driver(tmp_path, out, workers)
    assert [p for p in out.iterdir() if p.name.startswith(".samples.")]  # work in progress
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("SIGTERM did not stop the generation")
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "terminated by SIGTERM" in err and "Traceback" not in err
    assert not _leftovers(out), _leftovers(out)
    assert not list(out.rglob("*.root")) and not (out / "manifest.json").exists()
    deadline = time.monotonic() + 10
    workers_alive = [int(p.name) for p in pids.iterdir()]
    while any(_alive(pid) for pid in workers_alive) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers_alive if _alive(pid)], "pool workers survived"


def test_folder_of_a_killed_run_is_removed_by_the_next_run(tmp_path, tiny):
    out = tmp_path / "u"
    proc, _ = _start_driver(tmp_path, out, 1)
    proc.kill()  # SIGKILL: no clean-up possible
    proc.communicate(timeout=30)
    assert [p for p in out.iterdir() if p.name.startswith(".samples.")]
    generate.generate_universe("smoke", out=out, progress=False, workers=1)
    assert not _leftovers(out), _leftovers(out)


def test_stale_cleanup_spares_live_foreign_and_unknown_folders(tmp_path, tiny):
    from wmnb.artefacts import _host_tag

    out = tmp_path / "u"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host = _host_tag()
    names = {
        "dead": f".samples.{host}.{dead.pid}.0123abcd.tmp",
        "dead_old": f".samples.{host}.{dead.pid}.0123abcd.old",
        "live": f".samples.{host}.{live.pid}.0123abcd.tmp",
        "other_host": f".samples.elsewhere-{host}.{dead.pid}.0123abcd.tmp",
        "unknown": ".samples.k3j4h5g6.tmp",
        "not_ours": f".skims.{host}.{dead.pid}.0123abcd.tmp",
    }
    try:
        for name in names.values():
            (out / name).mkdir()
            (out / name / "big.root").write_bytes(b"x" * 100)
        generate.generate_universe("smoke", out=out, progress=False, workers=1)
        left = {p.name for p in out.iterdir()}
        assert names["dead"] not in left and names["dead_old"] not in left
        assert {names[k] for k in ("live", "other_host", "unknown", "not_ours")} <= left
    finally:
        live.kill()
        live.wait()


def test_sigterm_guard_raises_defers_and_restores_the_handler():
    from wmnb.universe.staging import GenerationTerminated, generation_guard

    seen = []

    def mine(signum, frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with pytest.raises(GenerationTerminated) as err, generation_guard():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert err.value.code == 143 and "SIGTERM" in str(err.value)
        assert signal.getsignal(signal.SIGTERM) is mine
        steps = []
        with pytest.raises(GenerationTerminated), generation_guard() as guard:
            with guard.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)
                steps.append("finished the critical section")
            steps.append("not reached")
        assert steps == ["finished the critical section"]
        assert signal.getsignal(signal.SIGTERM) is mine and not seen
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_generation_restores_the_previous_sigterm_handler(tmp_path, tiny, monkeypatch):
    def mine(signum, frame):  # pragma: no cover - never called
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        generate.generate_universe("smoke", out=tmp_path / "a", progress=False, workers=2)
        assert signal.getsignal(signal.SIGTERM) is mine
        monkeypatch.setattr(generate, "run_mc_job", lambda job: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            generate.generate_universe("smoke", out=tmp_path / "b", progress=False, workers=1)
        assert signal.getsignal(signal.SIGTERM) is mine
        assert not _leftovers(tmp_path / "b")
    finally:
        signal.signal(signal.SIGTERM, previous)


# ------------------------------------------------------------------ 7. other bad arguments

def _profile(tmp_path: Path, text: str) -> str:
    path = tmp_path / "robust.yaml"
    path.write_text("name: robust\nseed: 1\nexecutor: local\n" + textwrap.dedent(text))
    return str(path)


@pytest.mark.parametrize("text, word", [
    ("", "events_scale"),  # name 'robust' is no events scale
    ("chapters: [1, 2]\n", "chapters"),
    ("chapters:\n  00_universe: 5\n", "00_universe"),
    ("chapters:\n  00_universe:\n    events_scale: smoke\n    mc_floor: abc\n", "mc_floor"),
    ("chapters:\n  00_universe:\n    events_scale: smoke\n    chunk_size: 0\n", "chunk_size"),
    ("chapters:\n  00_universe:\n    events_scale: .inf\n", "events_scale"),
    ("chapters:\n  00_universe:\n    events_scale: smoke\n    compression: gzip\n", "compression"),
    ("chapters:\n  00_universe:\n    events_scale: smoke\n    workers: many\n", "workers"),
])
def test_bad_profile_files_give_a_named_error(tmp_path, tiny, capsys, text, word):
    rc, err = _generate(capsys, "--profile", _profile(tmp_path, text), "--out", str(tmp_path / "u"))
    assert rc == 2 and word in err and "Traceback" not in err
    assert not (tmp_path / "u").exists()


def test_bad_seed_in_profile_is_named(tmp_path, capsys):
    path = tmp_path / "robust.yaml"
    for seed in ('"abc"', "-5"):
        path.write_text(f"name: robust\nseed: {seed}\nexecutor: local\n")
        rc, err = _generate(capsys, "--profile", str(path), "--out", str(tmp_path / "u"))
        assert rc == 2 and "seed" in err


@pytest.mark.parametrize("section, word", [
    ({"events_scale": "smoke", "mc_floor": "abc"}, "mc_floor"),
    ({"events_scale": True}, "events_scale"),
    ({"events_scale": float("inf")}, "events_scale"),
    ({"events_scale": "smoke", "chunk_size": 0}, "chunk_size"),
    ({"events_scale": "smoke", "max_produced_per_file": 2.5}, "max_produced_per_file"),
    ({"events_scale": "smoke", "mc_factor": -1.0}, "mc_factor"),
    ({"events_scale": "smoke", "workers": 0}, "workers"),
    ({"events_scale": "smoke", "compression": "gzip"}, "compression"),
    (7, "00_universe"),
])
def test_universe_settings_check_every_key(monkeypatch, section, word):
    """The generator's own checks, independent of the profile loader's."""
    prof = {"name": "smoke", "seed": 1, "executor": "local", "chapters": {"00_universe": section}}
    monkeypatch.setattr(generate, "load_profile", lambda name: copy.deepcopy(prof))
    with pytest.raises(generate.GenerateError, match=word):
        generate.universe_settings("smoke")


def test_settings_null_means_default(monkeypatch):
    prof = {"name": "smoke", "seed": 1, "executor": "local",
            "chapters": {"00_universe": {"events_scale": "smoke", "mc_floor": None, "compression": None}}}
    monkeypatch.setattr(generate, "load_profile", lambda name: prof)
    s = generate.universe_settings("smoke")
    assert s["mc_floor"] == generate.DEFAULTS["smoke"]["mc_floor"] and s["compression"] == "zstd"


def test_bad_profile_name_is_named(tmp_path, capsys):
    rc, err = _generate(capsys, "--profile", "no_such_profile", "--out", str(tmp_path / "u"))
    assert rc == 2 and "no_such_profile" in err


@pytest.mark.parametrize("content, word", [
    (b"\xff\xfe\x00 not text", "cannot be read"),
    (b"physics: [unclosed\n", "not valid YAML"),
    (b"name: x\n1: 2\nfoo: 3\n", "unknown field '1'"),
    (b"- 1\n- 2\n", "mapping"),
    (b"", "mapping"),
])
def test_unreadable_or_malformed_cards_give_a_named_error(tmp_path, capsys, content, word):
    path = tmp_path / "card.yaml"
    path.write_bytes(content)
    rc, err = _generate(capsys, "--truth", str(path), "--out", str(tmp_path / "u"))
    assert rc == 2 and word in err and str(path) in err


BAD_LEAVES = [None, "text", [], {}, True, 10 ** 400, [1.0, "x"], {"a": 1}]


def _replace(card: dict, path: str, value) -> dict:
    card = copy.deepcopy(card)
    node = card
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return card


def _mapping_paths(schema: dict, prefix: str = "") -> list[str]:
    out = []
    for key, sub in schema.items():
        if isinstance(sub, dict):
            path = f"{prefix}.{key}" if prefix else key
            out += [path] + _mapping_paths(sub, path)
    return out


def test_cards_with_wrong_types_raise_card_errors_only():
    """Any wrong type anywhere in a card is a CardError naming the field, never another
    exception (a traceback in ``wmnb generate``)."""
    good = load_card("nominal")
    for path, field in FIELDS.items():
        for bad in BAD_LEAVES + [[10 ** 400] * 3, [float("nan")]]:
            if field.kind == "str" and isinstance(bad, str):
                continue  # a valid value for a text field
            with pytest.raises(CardError) as err:
                validate_card(_replace(good, path, bad))
            assert path.rsplit(".", 1)[-1] in str(err.value) or "physics.pdf.shift" in str(err.value), (path, bad)
    for path in _mapping_paths(SCHEMA):
        for bad in (None, 3, "text", [1, 2], {1: 2, "x": 3}):
            with pytest.raises(CardError):
                validate_card(_replace(good, path, bad))


# ------------------------------------------------------------------ reproducibility

def test_same_seed_gives_the_same_files_with_any_worker_count(tmp_path, tiny):
    a = generate.generate_universe("smoke", out=tmp_path / "a", progress=False, workers=1, seed=5)
    b = generate.generate_universe("smoke", out=tmp_path / "b", progress=False, workers=2, seed=5)
    for key in ("mc", "data", "closure", "cards"):
        assert a[key] == b[key], key
    files = [f for s in ("mc", "data", "closure") for e in a[s].values() for f in e["files"]]
    assert len(files) >= 12
    for f in files:
        x, y = (uproot.open(root / f)["Events"].arrays(library="np") for root in (tmp_path / "a", tmp_path / "b"))
        assert x.keys() == y.keys(), f
        for k in x:
            same = (all(np.array_equal(u, v) for u, v in zip(x[k], y[k])) if x[k].dtype == object
                    else np.array_equal(x[k], y[k]))
            assert same and len(x[k]) == len(y[k]), (f, k)
