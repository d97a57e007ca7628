"""The secondary-vertex (SV) control region of the nonprompt background, on generated events.

Prompt processes and QCD multijet are generated with the shipped cards, reconstructed, written
as NanoAOD-like files and run through the analysis's own W skim (``wmnb.engine``); the region is
:func:`wmnb.engine.selections.sv_control_region` (the extended-ABCD regions for SV-matched muons).
Yields are weighted by cross section / produced events, as the luminosity weight does.
"""
from __future__ import annotations

import numpy as np
import pytest

from wmnb.engine import selections as S
from wmnb.engine.skims import run_selections
from wmnb.universe import load_card

from generated_nanoaod import write_generated

#: produced events per process: the prompt single-muon processes in proportion to their share of
#: the selected W sample, and enough multijet events to fill the SV-tagged regions
PRODUCED = {"wplus_munu": 120_000, "wminus_munu": 100_000, "z_mumu": 40_000, "w_taunu": 30_000,
            "ttbar": 5_000, "diboson": 5_000, "qcd": 300_000}
PAPER_MAX_PROMPT = 0.02
OLD_SV_FAKE = 0.01


def _skim(tmp_path, card, process: str, n: int, seed: int) -> dict[str, np.ndarray]:
    path = write_generated(tmp_path / f"{card['name']}_{process}.root", card, process, n, seed, is_data=True,
                           drop_prefired=True)         # the W skim needs the trigger
    return run_selections([str(path)], ["w"], progress=False)["w"]["columns"]


@pytest.fixture(scope="module", params=["nominal", "data"])
def regions(request, tmp_path_factory):
    """Per ABCD region: (prompt yield, prompt yield with an SV-matched muon, nonprompt SV yield,
    prompt SV events, nonprompt SV events) and the card."""
    card = load_card(request.param)
    tmp = tmp_path_factory.mktemp(f"sv_{request.param}")
    out = {r: np.zeros(5) for r in S.ABCD_REGIONS}
    for i, (p, n) in enumerate(PRODUCED.items()):
        cols = _skim(tmp, card, p, n, 700 + 10 * i)
        w = card["physics"]["xsec_pb"][p] / n
        region = S.abcd_region(cols)
        sv_region = S.sv_control_region(cols)
        for k, name in enumerate(S.ABCD_REGIONS):
            in_sv = sv_region == k
            if p == "qcd":
                out[name] += [0.0, 0.0, w * in_sv.sum(), 0, in_sv.sum()]
            else:
                out[name] += [w * (region == k).sum(), w * in_sv.sum(), 0.0, in_sv.sum(), 0]
    return out, card


def test_sv_control_region_is_as_pure_as_the_papers(regions):
    """Prompt contamination of the SV control region below the paper's 2 %, in its signal-like
    part (isolated, m_T > 40 GeV: where prompt W dominate everything else) and everywhere else.
    Protects against a prompt fake-SV rate that is too high: with the old sv_fake = 0.01 the
    signal-like part was 31 % prompt; its expectation from the same events is checked too."""
    out, card = regions
    for name, (_, prompt_sv, nonprompt_sv, _, n_nonprompt_sv) in out.items():
        frac = prompt_sv / (prompt_sv + nonprompt_sv)
        assert frac < PAPER_MAX_PROMPT, (card["name"], name, frac)
        assert n_nonprompt_sv > 1000, (name, n_nonprompt_sv)       # a usable control region
    prompt_all, prompt_sv, nonprompt_sv, n_prompt_sv, _ = out["pass_high"]
    assert n_prompt_sv > 5                                           # the fraction is measured, not 0/x
    # the SV flag of a prompt muon is an independent coin with probability sv_fake: the yield
    # matches (Poisson) and, at the old rate, the same events would give a 20-40 % prompt region
    fake = card["detector"]["vertexing"]["sv_fake"]
    expect = fake * prompt_all
    assert abs(prompt_sv - expect) < 4 * np.sqrt(prompt_sv * expect / n_prompt_sv), (prompt_sv, expect)
    old = OLD_SV_FAKE * prompt_all / (OLD_SV_FAKE * prompt_all + nonprompt_sv)
    assert 0.2 < old < 0.4, old


def test_sv_control_region_keeps_the_nonprompt_abcd_overestimate(regions):
    """The SV flag is independent of the isolation-m_T correlation of nonprompt muons, so the
    extended ABCD applied inside the SV region overestimates its signal-like yield as in the
    whole nonprompt sample (10-20 %): the region can validate the 0.85 correction."""
    out, _ = regions
    y = {name: v[2] for name, v in out.items()}
    r = {m: y[f"pass_{m}"] / y[f"fail_{m}"] for m in ("low", "mid", "high")}
    over = r["mid"] ** 2 / r["low"] / r["high"]
    assert 1.03 < over < 1.35, over
