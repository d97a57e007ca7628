"""Any truth card: a profile's ``truth_card`` makes chapter 00 generate the data universe from that
card, the truth gate answers with that card's truths for that profile only, and the card's
content enters the runner's staleness.  Every universe here is tiny (about a second)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from wmnb import params, profiles, runner, truth
from wmnb.paths import STAGE_ENV, universe_dir
from wmnb.universe import CardError, card_hash, cli, generate, load_card, recorded_data_card
from wmnb.universe.card import CARDS_DIR
from wmnb.universe.writer import read_provenance

#: a universe of about a second: 1e-5 of the paper's statistics, 2000 events per simulated sample
TINY_UNIVERSE = {"events_scale": 1.0e-5, "mc_floor": 2000, "workers": 1}
#: values of the custom card that the shipped cards do not hold
MW, MZ, PDF0 = 80333.3, 91177.7, 0.777


def _custom_card(path: Path) -> dict:
    """The shipped data card with m_W, m_Z and the first PDF coordinate of its own, at ``path``."""
    card = yaml.safe_load((CARDS_DIR / "data.yaml").read_text())
    card["name"], card["description"] = "custom", "a test card"
    card["physics"]["mw_mev"], card["physics"]["mz_mev"] = MW, MZ
    card["physics"]["pdf"]["shift"][0] = PDF0
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return card


def _profile(folder: Path, name: str, card: str | None, **top) -> Path:
    doc = {"name": name, "seed": 7, "truth_card": card, **top,
           "chapters": {"00_universe": dict(TINY_UNIVERSE)}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A results store of its own, no registered profiles, no running chapter."""
    monkeypatch.setenv("WMNB_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv(profiles.PROFILE_FILES_ENV, raising=False)
    monkeypatch.delenv(STAGE_ENV, raising=False)
    return tmp_path


@pytest.fixture
def custom(isolated):
    """A profile ``custom`` whose truth_card is a card next to it (relative path), generated."""
    folder = isolated / "challenge"
    folder.mkdir()
    card = _custom_card(folder / "secret.yaml")
    name = profiles.register_profile(str(_profile(folder, "custom", "secret.yaml")))
    manifest = generate.generate_universe(name, out=universe_dir(name), into_results=True, progress=False)
    return {"name": name, "folder": folder, "card": card, "manifest": manifest}


# ------------------------------------------------------------------ the profile key

def test_relative_card_paths_are_read_from_the_profile_folder(isolated):
    folder = isolated / "p"
    folder.mkdir()
    _custom_card(folder / "mine.yaml")
    prof = profiles.load_profile(str(_profile(folder, "rel", "mine.yaml")))
    assert prof["truth_card"] == str((folder / "mine.yaml").resolve())
    assert profiles.load_profile(str(_profile(folder, "dflt", None)))["truth_card"] is None
    assert profiles.load_profile(str(_profile(folder, "named", "data")))["truth_card"] is None
    assert profiles.load_profile(str(_profile(folder, "sim", "nominal")))["truth_card"] == "nominal"


@pytest.mark.parametrize("value,match", [("missing.yaml", r"truth card .*missing\.yaml does not exist"),
                                         ("sub/", "is a directory"),
                                         ("dta", "neither a shipped card"),
                                         ("", "is empty"),
                                         (3, "'truth_card' must be a string")])
def test_a_bad_truth_card_fails_by_name(isolated, value, match):
    (isolated / "sub").mkdir()
    path = _profile(isolated, "bad", value)
    with pytest.raises(profiles.ProfileError, match=match) as err:
        profiles.load_profile(str(path))
    assert str(path) in str(err.value) and "truth_card" in str(err.value)


def test_an_invalid_card_stops_chapter_00_naming_file_profile_and_field(isolated):
    card = _custom_card(isolated / "broken_card.yaml")
    del card["physics"]["mw_mev"]
    (isolated / "broken_card.yaml").write_text(yaml.safe_dump(card))
    name = profiles.register_profile(str(_profile(isolated, "broken", "broken_card.yaml")))
    with pytest.raises(CardError, match=r"profile 'broken', key 'truth_card': truth card .*broken_card\.yaml: "
                                        r"missing field 'physics\.mw_mev'"):
        generate.generate_universe(name, out=isolated / "u", progress=False)
    assert not (isolated / "u" / "manifest.json").exists()


# ------------------------------------------------------------------ chapter 00

def test_the_data_are_generated_from_the_profile_card(custom):
    name, man = custom["name"], custom["manifest"]
    want = card_hash(load_card(custom["folder"] / "secret.yaml"))
    assert man["cards"]["data"] == want != card_hash(load_card("data"))
    assert man["cards"]["nominal"] == card_hash(load_card("nominal"))       # the simulation keeps its card
    assert man["cards"]["closure"] == card_hash(load_card("closure"))       # and so does the closure set
    assert man["card_names"]["data"] == "custom"
    assert man["data_card"]["sha256"] == want
    assert man["data_card"]["source"] == str((custom["folder"] / "secret.yaml").resolve())
    root = universe_dir(name)
    kept = recorded_data_card(root)
    assert kept["physics"]["mw_mev"] == MW and card_hash(kept) == want
    for stream in ("SingleMuon", "MuOnia"):
        for f in man["data"][stream]["files"]:
            assert read_provenance(root / f)["card_sha256"] == want
        for f in man["closure"][stream]["files"]:
            assert read_provenance(root / f)["card_sha256"] == man["cards"]["closure"]


def test_wmnb_generate_defaults_to_the_profile_card(custom, capsys):
    out = custom["folder"] / "by_hand"
    assert cli.cli_generate(["--profile", custom["name"], "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert json.loads((out / "manifest.json").read_text())["cards"]["data"] == custom["manifest"]["cards"]["data"]
    assert cli.cli_generate(["--profile", custom["name"], "--truth", "data", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "manifest.json").read_text())["cards"]["data"] == card_hash(load_card("data"))


# ------------------------------------------------------------------ the truth gate

def test_the_gate_answers_with_the_profile_card_and_only_for_that_profile(custom, monkeypatch):
    name = custom["name"]
    assert truth.compare("data", "physics.mz_mev", purpose="test", profile=name) == MZ
    assert truth.compare("data", "physics.mw_mev", purpose="test", profile=name, unblinded=True) == MW
    assert truth.pdf_shift("data", purpose="test", profile=name)[0] == pytest.approx(PDF0)
    shipped = load_card("data")["physics"]
    # another profile, and no profile at all: the shipped data card
    assert truth.compare("data", "physics.mz_mev", purpose="test", profile="smoke") == shipped["mz_mev"]
    assert truth.compare("data", "physics.mz_mev", purpose="test") == shipped["mz_mev"]
    # the closure universe keeps its shipped card whatever the profile
    assert (truth.compare("closure", "physics.mw_mev", purpose="test", profile=name)
            == load_card("closure")["physics"]["mw_mev"])
    # blinding holds for the custom card too
    with pytest.raises(truth.BlindedTruth):
        truth.compare("data", "physics.mw_mev", purpose="test", profile=name)
    # inside a chapter the runner executes, the gate knows the profile without being told
    monkeypatch.setenv(STAGE_ENV, json.dumps({"profile": name, "chapter": "02_calibration", "dir": "/nowhere"}))
    assert truth.compare("data", "physics.mz_mev", purpose="test") == MZ
    monkeypatch.delenv(STAGE_ENV)
    assert truth.compare("data", "physics.mz_mev", purpose="test") == shipped["mz_mev"]


def test_a_notebook_run_by_hand_declares_its_profile_to_the_gate(custom):
    from wmnb.chapters import get_chapter

    ns = {"profile": custom["name"], "seed": 7, "executor": "local",
          **{p.name: p.default for p in get_chapter("08_mw_fit").parameters or ()}}
    params.notebook_config("08_mw_fit", ns)
    assert truth.compare("data", "physics.mz_mev", purpose="test") == MZ
    # the physics the theory comparisons see carries the card's PDF position, not its m_W
    assert truth.pdf_shift("data", purpose="test")[0] == pytest.approx(PDF0)


def test_the_gate_refuses_a_universe_made_from_another_card(custom):
    name, folder = custom["name"], custom["folder"]
    card = dict(custom["card"])
    card["physics"] = {**card["physics"], "mz_mev": MZ + 1.0}
    (folder / "secret.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    with pytest.raises(truth.TruthCardMismatch, match=r"profile 'custom' names the truth card .*secret\.yaml.*"
                                                       r"rerun chapter 00"):
        truth.compare("data", "physics.mz_mev", purpose="test", profile=name)
    # the message names the card, never a value of it
    with pytest.raises(truth.TruthCardMismatch) as err:
        truth.compare("data", "physics.mz_mev", purpose="test", profile=name)
    assert f"{MZ}" not in str(err.value) and f"{MW}" not in str(err.value)


def test_the_gate_refuses_an_altered_copy(custom):
    copy = universe_dir(custom["name"]) / generate.DATA_CARD_FILE
    kept = json.loads(copy.read_text())
    kept["physics"]["mz_mev"] = MZ + 2.0
    copy.write_text(json.dumps(kept))
    with pytest.raises(truth.TruthCardMismatch, match="does not hash to the data card"):
        truth.compare("data", "physics.mz_mev", purpose="test", profile=custom["name"])


def test_a_profile_without_its_universe_gets_the_card_it_names(isolated):
    _custom_card(isolated / "secret.yaml")
    name = profiles.register_profile(str(_profile(isolated, "fresh", "secret.yaml")))
    assert truth.compare("data", "physics.mz_mev", purpose="test", profile=name) == MZ


# ------------------------------------------------------------------ staleness

def test_staleness_follows_the_card_content_not_its_path(isolated):
    folder = isolated / "s"
    folder.mkdir()
    card = _custom_card(folder / "a.yaml")
    path = _profile(folder, "stale", "a.yaml")
    name = profiles.register_profile(str(path))
    before = runner.expected_hashes(name)
    # the shipped data card (null) and the custom card give different universes
    _profile(folder, "stale", None)
    shipped = runner.expected_hashes(name)
    assert shipped["00_universe"] != before["00_universe"]
    # the same content at another path: nothing is stale
    shutil.copy(folder / "a.yaml", folder / "b.yaml")
    _profile(folder, "stale", "b.yaml")
    assert runner.expected_hashes(name) == before
    # other content at the same path: chapter 00 and everything after it are stale
    card["physics"]["mz_mev"] = MZ + 3.0
    (folder / "b.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    after = runner.expected_hashes(name)
    assert all(after[c] != before[c] for c in after), {c: after[c] == before[c] for c in after}
