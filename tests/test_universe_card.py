"""Truth cards: schema, shipped cards, clear errors naming the field."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml

from wmnb.universe import CardError, card_hash, load_card, validate_card
from wmnb.universe import cardmaker
from wmnb.universe.card import FIELDS, N_ETA, check_closure_card


@pytest.fixture(scope="module")
def cards():
    return {n: load_card(n) for n in ("nominal", "data", "closure")}


def test_shipped_cards_valid_and_complete(cards):
    for name, c in cards.items():
        assert c["name"] == name
        for knob in ("A", "e", "M"):
            assert len(c["detector"]["momentum_scale"][knob]) == N_ETA
        for knob in "abcd":
            assert len(c["detector"]["resolution"][knob]) == N_ETA
        assert isinstance(c["physics"]["mw_mev"], float)


def test_shipped_cards_are_what_cardmaker_makes(cards):
    # the YAML files must not drift from their documented recipe
    assert cards["nominal"] == validate_card(cardmaker.nominal_card())
    assert cards["data"] == validate_card(cardmaker.data_card())
    assert cards["closure"] == validate_card(cardmaker.closure_card())


def test_closure_is_the_simulation_with_its_own_mass(cards):
    """A pure-detector closure: the simulation's physics and detector with an m_W of its own
    (so the fit has something to recover) that is not the data's (it is shown unblinded).  The
    old closure card carried the data's physics, m_W included."""
    clo, nom, dat = cards["closure"], cards["nominal"], cards["data"]
    assert clo["detector"] == nom["detector"]
    own = {"mw_mev", "gw_mev"}
    assert {k: v for k, v in clo["physics"].items() if k not in own} == \
        {k: v for k, v in nom["physics"].items() if k not in own}
    shift = clo["physics"]["mw_mev"] - nom["physics"]["mw_mev"]
    assert shift == cardmaker.CLOSURE_MW_OFFSET_MEV and 10 <= abs(shift) <= 50
    assert abs(clo["physics"]["mw_mev"] - dat["physics"]["mw_mev"]) > 20   # no hint of the blinded mass
    ratio = clo["physics"]["gw_mev"] / nom["physics"]["gw_mev"]
    assert ratio == pytest.approx((clo["physics"]["mw_mev"] / nom["physics"]["mw_mev"]) ** 3, rel=1e-5)
    assert len({card_hash(c) for c in cards.values()}) == 3
    check_closure_card(clo, nom)


@pytest.mark.parametrize("path, value, words", [
    ("detector.resolution.standalone", 0.2, ["detector.resolution.standalone", "differs"]),
    ("physics.qt.nonperturbative.kt_w", 2.0, ["physics.qt.nonperturbative.kt_w", "differs"]),
    ("physics.mw_mev", 80379.0, ["physics.mw_mev", "nothing to recover"]),
])
def test_closure_card_check_names_the_offending_field(cards, path, value, words):
    bad = copy.deepcopy(cards["closure"])
    node = bad
    *head, leaf = path.split(".")
    for part in head:
        node = node[part]
    node[leaf] = value
    with pytest.raises(CardError) as err:
        check_closure_card(bad, cards["nominal"], "closure card X")
    assert all(w in str(err.value) for w in words) and "closure card X" in str(err.value)


def test_data_differs_realistically_from_simulation(cards):
    nom, dat = cards["nominal"], cards["data"]
    assert dat["physics"]["mw_mev"] != nom["physics"]["mw_mev"]
    assert abs(dat["physics"]["mw_mev"] - nom["physics"]["mw_mev"]) < 100
    # SM relation Gamma_W ~ m_W^3
    ratio = dat["physics"]["gw_mev"] / nom["physics"]["gw_mev"]
    assert ratio == pytest.approx((dat["physics"]["mw_mev"] / nom["physics"]["mw_mev"]) ** 3, rel=1e-5)
    ms_n, ms_d = nom["detector"]["momentum_scale"], dat["detector"]["momentum_scale"]
    dA = np.abs(np.subtract(ms_d["A"], ms_n["A"]))
    de = np.abs(np.subtract(ms_d["e"], ms_n["e"]))
    dM = np.abs(np.subtract(ms_d["M"], ms_n["M"]))
    # sizes of the CMS residual corrections; large enough to be measured with 2 M J/psi
    assert 5e-5 < dA.mean() < 5e-4
    assert 2e-4 < de.mean() < 3e-3
    assert 3e-6 < dM.mean() < 5e-5
    assert np.all(np.abs(ms_n["A"]) > 0) and np.all(np.abs(ms_d["A"]) > 0)
    # every detector knob moves
    for path in FIELDS:
        if path.startswith("detector.") and path not in (
                "detector.resolution.d", "detector.resolution.angle", "detector.efficiency.tracking.charge_asym",
                "detector.efficiency.loose_id", "detector.efficiency.id.low_pt_drop", "detector.efficiency.id.low_pt_scale",
                "detector.efficiency.trigger.threshold", "detector.efficiency.trigger.iso_cut",
                "detector.efficiency.trigger.iso_smear", "detector.efficiency.trigger.dimuon_eff",
                "detector.efficiency.isolation.ue_shape", "detector.recoil.response_qt",
                "detector.pileup.vertex_eff", "detector.prefiring.rel_unc", "detector.vertexing.dxy_sigma_cm",
                "detector.vertexing.dz_sigma_cm", "detector.vertexing.sv_fake", "detector.extra_objects.soft_muon_prob",
                "detector.extra_objects.fake_electron_prob", "detector.extra_objects.electron_eff",
                "detector.efficiency.reco.charge_asym"):
            a, b = _get(nom, path), _get(dat, path)
            assert a != b, f"{path} is the same in data and simulation"


def _get(card, path):
    node = card
    for p in path.split("."):
        node = node[p]
    return node


def _set(card, path, value):
    node = card
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[p]
    if value is _DELETE:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value


_DELETE = object()


@pytest.mark.parametrize("path, value, words", [
    ("physics.mw_mev", _DELETE, ["missing", "physics.mw_mev"]),
    ("physics.mw_mev", "80.4 GeV", ["physics.mw_mev", "number"]),
    ("physics.mw_mev", 91000.0, ["physics.mw_mev", "out of range"]),
    ("detector.momentum_scale.A", [0.0] * 47, ["detector.momentum_scale.A", "48"]),
    ("detector.resolution.a", [0.01] * 47 + [-0.01], ["detector.resolution.a[47]", "out of range"]),
    ("detector.pileup", "many", ["detector.pileup", "mapping"]),
    ("physics.pdf.n_eigen", 20.5, ["physics.pdf.n_eigen", "integer"]),
    ("physics.pdf.shift", [0.0] * 19, ["physics.pdf.shift", "20"]),
    ("physics.qt.bogus", 1.0, ["unknown field", "physics.qt.bogus"]),
])
def test_invalid_cards_name_the_field(path, value, words, tmp_path):
    card = copy.deepcopy(load_card("nominal"))
    _set(card, path, value)
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(card))
    with pytest.raises(CardError) as err:
        load_card(f)
    msg = str(err.value)
    for w in words:
        assert w in msg
    assert str(f) in msg


def test_missing_card_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_card("nope")
    with pytest.raises(FileNotFoundError):
        load_card(tmp_path / "missing.yaml")


def test_bad_yaml_is_clear(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("physics: [unclosed\n")
    with pytest.raises(CardError, match="not valid YAML"):
        load_card(f)


def test_card_hash_ignores_formatting(tmp_path):
    c = load_card("nominal")
    f = tmp_path / "same.yaml"
    f.write_text(yaml.safe_dump(c, default_flow_style=True))
    assert card_hash(load_card(f)) == card_hash(c)


def test_every_field_is_documented_in_the_book_page():
    from wmnb.paths import project_root

    page = (project_root() / "book" / "universe-format.md").read_text()
    missing = [p for p in FIELDS if f"`{p}`" not in page]
    assert not missing, f"fields missing from book/universe-format.md: {missing}"
    for path, f in FIELDS.items():
        assert f.doc, path
