"""The blind challenge: a truth card the chain has never seen, through the book, unblinded at the end.

The test plays both parts of ``book/running.md`` ("A blind challenge").  It writes a card the
repository does not hold (the shipped data card with an m_W of its own, the W width moved with it
as m_W^3) and a profile with another seed that names it (``truth_card``); the runner executes the
smoke chain up to chapter 08 (00-06 and 08: chapter 07 is not an input of the m_W fit), and then
the m_W fitted by chapter 08 is compared, through the truth gate, with the card's.

The inclusive generator-level W and Z samples (``mc_gen``, read by chapter 06 only) are 16 times
the smoke size: at the smoke size chapter 06's q_T reweighting refuses its binning for most seeds
(the forward |y| rows of the Z sample leave q_T bins above 150 GeV empty; 2 of 20 seeds pass,
among them the smoke profile's), at 16 times every one of 20 seeds tried passes.  Otherwise
cheaper than the smoke profile only where nothing that chapter 08 fits changes: chapter 05 skips
its validation fits (the biased pseudo-data test, the SV region), chapter 06 its Z validation fit,
and chapter 08 its random starts, cross-checks, paper-size projection and goodness-of-fit toys.
Chapter 08 runs with ``unblind: true``, the explicit act that a challenge ends with.  Its results
go to ``results/blind_challenge/`` like the smoke run's to ``results/smoke/``, so a second
``make test`` skips what is up to date (the card's content, not its temporary path, enters the
run hashes).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wmnb import profiles, runner, truth
from wmnb.artefacts import read_json, read_summary
from wmnb.paths import chapter_dir, project_root, universe_dir
from wmnb.universe import card_hash, load_card
from wmnb.universe.card import CARDS_DIR

pytestmark = [pytest.mark.notebook, pytest.mark.slow]

NAME = "blind_challenge"
#: the challenge's m_W: in no shipped card (data 80351.7, simulation 80379.0, closure 80419.0)
CHALLENGE_MW = 80295.4
#: another seed than every shipped profile's (smoke, default and full use 20161)
CHALLENGE_SEED = 9127
#: cheaper than smoke where the m_W fit does not change (see the module docstring)
OVERRIDES = {"00_universe": {"gen_factor": 16.0},
             "05_nonprompt": {"fits": False}, "06_theory": {"z_fit": False},
             "08_mw_fit": {"unblind": True, "n_random_starts": 0, "cross_checks": False, "projection": False,
                           "n_gof_toys": 0}}
CHAPTERS = ("00_universe", "01_selection", "02_calibration", "03_efficiencies", "04_recoil", "06_theory",
            "05_nonprompt", "08_mw_fit")


def _secret_card(path: Path) -> None:
    """Person A's card: the shipped data card with its own m_W (and the width that goes with it)."""
    card = yaml.safe_load((CARDS_DIR / "data.yaml").read_text())
    phys = card["physics"]
    phys["gw_mev"] = round(phys["gw_mev"] * (CHALLENGE_MW / phys["mw_mev"]) ** 3, 2)
    phys["mw_mev"] = CHALLENGE_MW
    card["name"], card["description"] = NAME, "blind challenge: the data card with an m_W of its own"
    path.write_text(yaml.safe_dump(card, sort_keys=False))


def _challenge_profile(folder: Path) -> Path:
    """Person B's profile: the smoke profile under another name and seed, naming the card."""
    doc = yaml.safe_load((project_root() / "params" / "smoke.yaml").read_text())
    doc.update({"name": NAME, "seed": CHALLENGE_SEED, "truth_card": "secret_card.yaml",
                "description": "blind challenge on the smoke sizes"})
    doc["chapters"] = {cid: {**(doc["chapters"].get(cid) or {}), **OVERRIDES.get(cid, {})} for cid in CHAPTERS}
    path = folder / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def challenge(tmp_path_factory):
    folder = tmp_path_factory.mktemp("challenge")
    _secret_card(folder / "secret_card.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(profiles.PROFILE_FILES_ENV, raising=False)   # the registration ends with this module
        try:
            outcome = runner.run(str(_challenge_profile(folder)), only=["08_mw_fit"], progress=False)
        except runner.ChapterFailed as err:
            pytest.fail(str(err))
        yield {"folder": folder, "outcome": outcome, "summary": read_summary(chapter_dir(NAME, "08_mw_fit"))}


def test_the_chain_ran_on_the_challenge_card(challenge):
    assert set(challenge["outcome"]) == set(CHAPTERS)
    manifest = read_json(universe_dir(NAME) / "manifest.json")
    assert manifest["cards"]["data"] == card_hash(load_card(challenge["folder"] / "secret_card.yaml"))
    assert manifest["seed"] == CHALLENGE_SEED


def test_the_blind_challenge_recovers_the_card_mass(challenge):
    h = challenge["summary"]["headline"]
    assert h["blinded"] is False and h["unblinded_at"]
    # unblinding: the truth of the card the data were generated from, through the gate only
    mw_true = truth.compare("data", "physics.mw_mev", purpose="blind challenge: unblinded m_W against the card",
                            unblinded=True, profile=NAME)
    assert mw_true == CHALLENGE_MW
    assert truth.compare("data", "physics.mw_mev", purpose="blind challenge: the shipped card is another one",
                         unblinded=True) != CHALLENGE_MW
    pull = (h["mw"] - mw_true) / h["mw_err"]
    print(f"blind challenge: m_W = {h['mw']:.1f} +- {h['mw_err']:.1f} MeV, truth {mw_true:.1f} MeV, "
          f"fitted - truth = {h['mw'] - mw_true:+.1f} MeV, pull {pull:+.2f}")
    assert h["mw_err"] > 0 and abs(pull) < 2.0, (h["mw"], h["mw_err"], mw_true)
