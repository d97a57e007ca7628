"""wmnb.conventions: one home for each shared convention, and the line shapes' stated properties.

The repository guard scans the package (and the notebooks' code cells) for conventions written
outside ``wmnb/conventions.py``: particle constants, PDG literals, Breit–Wigner formulas, LHE
weight indices, process colour/label tables.  ``PENDING`` lists the places known to still carry
their own copy (files another change owns); an entry that no longer matches fails too, so the
list shrinks as they are moved.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate

from wmnb import conventions as C

ROOT = Path(__file__).resolve().parent.parent
HOME = "wmnb/conventions.py"

_PROC = "|".join(sorted({*C.CARD_PROCESSES, *C.W_FIT_PROCESSES.values(), "z"}, key=len, reverse=True))
RULES: dict[str, re.Pattern[str]] = {
    # a particle constant assigned anywhere but in its home
    "particle constant": re.compile(
        r"^\s*(MUON_MASS\w*|ELECTRON_MASS|TAU_MASS|ALPHA_EM|GAMMA_[ZW]|M[ZW]_PDG\w*|[ZW]_(MASS|WIDTH)(_PDG(_ERR)?)?"
        r"|JPSI_MASS|UPSILON\w*MASS)\s*(:[^=\n]*)?=(?!=)", re.M),
    # PDG values written as literals (muon, electron, tau, alpha, m_Z, Gamma_Z, Gamma_W, J/psi, Upsilon(1S))
    "PDG literal": re.compile(
        r"(?<![\w.])(0\.10565\d*|0\.000511\d*|1\.7768\d*|137\.036\d*|91\.18[78]\d*|2\.495[25]\d*|2\.085"
        r"|3\.0969\d*|9\.4604\d*)(?![\w.])"),
    # a Breit-Wigner denominator (m^2 - M^2)^2 + ... written out
    "Breit-Wigner formula": re.compile(
        r"\(\s*[\w.]+(\s*\*\*\s*2|\s*\*\s*[\w.]+)?\s*-\s*[\w.]+(\s*\*\*\s*2|\s*\*\s*[\w.]+)\s*\)\s*\*\*\s*2\s*\+"),
    # the LHE weight index conventions
    "LHE index convention": re.compile(
        r"^\s*SCALE_(NAMES|PAIRS|NOMINAL|POINTS)\s*(:[^=\n]*)?=\s*[(\[{\d]|muR0p5|\"MuR\"\s*:\s*\(\d"
        r"|(?<![\w.])[12]\s*\+\s*2\s*\*\s*k\b", re.M),
    # process -> colour tables and hard-coded colours
    "process colour": re.compile(
        r"[\"']#[0-9a-fA-F]{6}[\"']|[\"'](" + _PROC + r")[\"']\s*[:,]\s*[\"'](C\d|tab:\w+|#\w+)[\"']"),
    # process display labels and the sample -> fit-process names
    "process label": re.compile(r"\\{1,2}to\\{1,2}(mu|tau)|[\"']ttbar[\"']\s*:\s*[\"']top[\"']"),
}

#: (file, rule) still carrying its own copy, with what should replace it (see the issue report).
PENDING: dict[tuple[str, str], str] = {}


def _sources() -> dict[str, str]:
    out = {str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / "wmnb").rglob("*.py"))}
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        out[str(nb.relative_to(ROOT))] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    out.pop(HOME)
    return out


def _violations() -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for path, text in _sources().items():
        for rule, rx in RULES.items():
            hits = [m.group(0).strip() for m in rx.finditer(text)]
            if hits:
                found[(path, rule)] = hits
    return found


def test_conventions_are_defined_only_in_wmnb_conventions():
    bad = {k: v for k, v in _violations().items() if k not in PENDING}
    assert not bad, ("conventions written outside wmnb/conventions.py (import them from there): "
                     + "; ".join(f"{p} [{r}]: {v[:3]}" for (p, r), v in bad.items()))


def test_pending_list_is_not_stale():
    stale = sorted(set(PENDING) - set(_violations()))
    assert not stale, f"these places now use wmnb.conventions; remove them from PENDING: {stale}"


def test_the_rules_catch_what_they_are_meant_to():
    samples = {
        "particle constant": "MUON_MASS = 0.1\n    GAMMA_Z: float = 2.5\n",
        "PDG literal": "m = 0.1056583755\nx = 91.1876\n",
        "Breit-Wigner formula": "1.0 / ((m * m - M * M) ** 2 + (M * g) ** 2)\n1/((mm**2 - M**2) ** 2 + mm**4)",
        "LHE index convention": 'SCALE_NOMINAL = 4\nup = pdf[:, 1 + 2 * k]\n{"MuR": (7, 1)}',
        "process colour": 'COLORS = {"wplus_munu": "#e42536"}\n("jpsi", "C2", "x")',
        "process label": 'lab = r"W$\\to\\mu\\nu$"\nP = {"ttbar": "top"}',
    }
    for rule, text in samples.items():
        assert RULES[rule].search(text), rule
    # and leave ordinary code alone
    ok = "x = MUON_MASS ** 2\nif MUON_MASS == m:\n    s = 2 * k\n(a - b) ** 2\ncolor='C0'"
    assert not any(rx.search(ok) for rx in RULES.values())


# ---------------------------------------------------------------- particle constants

def test_particle_constants_and_their_users():
    from wmnb.muonscale import kinematics as ckin
    from wmnb.engine import kinematics as ekin
    from wmnb.universe import kinematics as ukin

    assert C.MUON_MASS == 105.6583755e-3
    assert C.MUON_MASS_CALIB == round(C.MUON_MASS, 6)
    assert ekin.MUON_MASS is C.MUON_MASS and ukin.MUON_MASS is C.MUON_MASS
    assert ckin.dimuon_mass.__defaults__ == (C.MUON_MASS_CALIB,)
    assert C.Z_MASS_PDG == 91.1880 and C.Z_WIDTH_PDG == 2.4955 and C.Z_MASS_PDG_ERR == 0.0020
    # the generator's Z and W truth equal the PDG values the analysis quotes
    from wmnb.universe import load_card

    phys = load_card("nominal")["physics"]
    assert phys["mz_mev"] / 1000 == C.Z_MASS_PDG and phys["gz_mev"] / 1000 == C.Z_WIDTH_PDG
    assert phys["gw_mev"] / 1000 == C.W_WIDTH_PDG


# ---------------------------------------------------------------- LHE weights

def test_lhe_scale_convention():
    assert [C.lhe_scale_index(r, f) for r in range(3) for f in range(3)] == list(range(C.N_LHE_SCALE))
    assert C.LHE_SCALE_NOMINAL == 4 and C.LHE_SCALE_NAMES[4] == "muR1_muF1"
    for i, (lr, lf) in enumerate(C.LHE_SCALE_LOG2):
        r, f = C.LHE_SCALE_FACTORS[i // 3], C.LHE_SCALE_FACTORS[i % 3]
        assert (2.0 ** lr, 2.0 ** lf) == (r, f)
        assert C.LHE_SCALE_NAMES[i] == f"muR{r:g}_muF{f:g}".replace(".", "p")
    assert C.LHE_SCALE_PAIRS == {"MuR": (7, 1), "MuF": (5, 3), "MuRMuF": (8, 0)}
    for up, down in C.LHE_SCALE_PAIRS.values():      # up doubles, down halves the varied scales
        u, d = C.LHE_SCALE_LOG2[up], C.LHE_SCALE_LOG2[down]
        assert all(a >= 0 and a == -b for a, b in zip(u, d)) and any(u)
    with pytest.raises(ValueError):
        C.lhe_scale_index(3, 0)


def test_lhe_pdf_convention():
    assert C.LHE_PDF_CENTRAL == 0
    assert [C.lhe_pdf_index(k, up) for k in range(3) for up in (True, False)] == [1, 2, 3, 4, 5, 6]
    assert C.lhe_pdf_pairs(1 + 2 * 7) == 7
    with pytest.raises(ValueError):
        C.lhe_pdf_index(-1, True)


def test_the_universe_writes_lhe_weights_in_this_convention():
    from wmnb.universe import load_card
    from wmnb.universe import physics as ph

    phys = load_card("nominal")["physics"]
    rng = np.random.default_rng(5)
    n = 2000
    y, qt = rng.normal(0, 1.5, n), rng.gamma(2.0, 5.0, n)
    c, f = rng.uniform(-1, 1, n), rng.uniform(0, 2 * np.pi, n)
    scale, pdf = ph.theory_weights(phys, "wplus", y, qt, c, f)
    assert scale.shape == (n, C.N_LHE_SCALE) and np.all(scale[:, C.LHE_SCALE_NOMINAL] == 1.0)
    assert np.all(pdf[:, C.LHE_PDF_CENTRAL] == 1.0)
    # muR x2 is the density at log2(muR) = +1, and up/down of eigenvector 0 are +-1 sigma
    tp0 = ph.theory_point(phys, "wplus")
    nominal = ph.event_density(tp0, y, qt, c, f)
    up = ph.event_density(ph.theory_point(phys, "wplus", 1.0, 0.0), y, qt, c, f)
    assert np.allclose(scale[:, C.LHE_SCALE_PAIRS["MuR"][0]], up / nominal, rtol=1e-12)
    shift = np.zeros(int(phys["pdf"]["n_eigen"]))
    shift[0] = -1.0
    down = ph.event_density(ph.theory_point(phys, "wplus", pdf_shift=shift), y, qt, c, f)
    assert np.allclose(pdf[:, C.lhe_pdf_index(0, up=False)], down / nominal, rtol=1e-12)


def test_lhe_names_of_the_shared_layers_agree():
    """Until they import them, the copies in files owned elsewhere must equal the conventions."""
    from wmnb.engine import histogram
    from wmnb.mw import systematics

    if hasattr(histogram, "SCALE_NAMES"):
        assert tuple(histogram.SCALE_NAMES) == C.LHE_SCALE_NAMES
    if hasattr(systematics, "SCALE_PAIRS"):
        assert dict(systematics.SCALE_PAIRS) == C.LHE_SCALE_PAIRS
        assert systematics.SCALE_NOMINAL == C.LHE_SCALE_NOMINAL
    if hasattr(systematics, "PROCESSES"):
        assert list(systematics.PROCESSES.items()) == list(C.W_FIT_PROCESSES.items())


# ---------------------------------------------------------------- processes

def test_process_table():
    from wmnb import plotting
    from wmnb.universe import card, generate

    assert card.PROCESSES == C.CARD_PROCESSES and generate.MC_PROCESSES == C.MC_PROCESSES
    assert {p for ps in generate.STREAMS.values() for p in ps} == set(C.CARD_PROCESSES)
    assert set(C.W_FIT_PROCESSES) == set(generate.STREAMS["SingleMuon"])
    named = {*C.CARD_PROCESSES, *C.W_FIT_PROCESSES.values(), *plotting.DEFAULT_GROUPS}
    assert named <= set(C.PROCESS_STYLE)
    for label, colour in C.PROCESS_STYLE.values():
        assert label and re.fullmatch(r"#[0-9a-f]{6}", colour)
    # processes drawn together have different colours
    together = [C.W_FIT_PROCESSES.values(), generate.STREAMS["SingleMuon"], generate.STREAMS["MuOnia"],
                ("jpsi", "upsilon", "z_mumu")]
    for group in together:
        colours = [C.process_colour(p) for p in group]
        assert len(set(colours)) == len(colours), group
    assert C.process_style("unknown") == ("unknown", None)
    assert C.process_label("wplus_munu") == C.PROCESS_STYLE["wplus_munu"][0]


# ---------------------------------------------------------------- Breit-Wigner line shapes

MW, GW = 80.379, 2.085


def test_breit_wigner_value_against_a_hand_computation():
    # m = 80: s = 6400, M^2 = 6460.783641, (s - M^2)^2 = 60.783641^2 = 3694.651013...,
    # s^2 Gamma^2 / M^2 = 40960000 * 4.347225 / 6460.783641 = 27560.485832...,
    # BW = 1 / 31255.136845... = 3.1994740735e-5; in m: 2 * 80 * BW = 5.1191585176e-3;
    # fixed width: 1 / (3694.651013 + 6460.783641 * 4.347225) = 3.1465211053e-5
    assert C.breit_wigner(80.0, MW, GW) == pytest.approx(3.1994740735e-5, rel=1e-10)
    assert C.breit_wigner_mass_density(80.0, MW, GW) == pytest.approx(5.1191585176e-3, rel=1e-10)
    assert C.breit_wigner_fixed_width(80.0, MW, GW) == pytest.approx(3.1465211053e-5, rel=1e-10)
    # at the pole every form is 1 / (M^2 Gamma^2) (times 2M for the density in m)
    assert C.breit_wigner(MW, MW, GW) == pytest.approx(1 / (MW * GW) ** 2, rel=1e-14)
    assert C.breit_wigner_fixed_width(MW, MW, GW) == pytest.approx(1 / (MW * GW) ** 2, rel=1e-14)
    assert C.breit_wigner_mass_density(MW, MW, GW) == pytest.approx(2 / (MW * GW**2), rel=1e-14)


def test_breit_wigner_normalisation_as_documented():
    """``∫ BW ds`` over all s is π/(MΓ); the s > 0 part lacks ≈ 1/M² of it; the density in m
    integrates over m to the same as BW over s (Jacobian 2m)."""
    def bw_s(s: float) -> float:      # breit_wigner as a function of s
        return float(1.0 / ((s - MW**2) ** 2 + s * s * GW**2 / MW**2))

    pole = [MW**2 - 20 * MW * GW, MW**2, MW**2 + 20 * MW * GW]
    full = sum(integrate.quad(bw_s, a, b, limit=400, epsabs=0, epsrel=1e-12)[0]
               for a, b in ((-np.inf, pole[0]), (pole[0], pole[2]), (pole[2], np.inf)))
    assert full == pytest.approx(math.pi / (MW * GW), rel=1e-8)
    below = integrate.quad(bw_s, -np.inf, 0.0, epsabs=0, epsrel=1e-12)[0]
    assert below == pytest.approx(1 / MW**2, rel=0.01)
    lo, hi = 50.0, 150.0
    in_m = integrate.quad(lambda m: float(C.breit_wigner_mass_density(m, MW, GW)), lo, hi,
                          points=[MW], limit=400, epsabs=0, epsrel=1e-12)[0]
    in_s = integrate.quad(bw_s, lo**2, hi**2, points=[MW**2], limit=400, epsabs=0, epsrel=1e-12)[0]
    assert in_m == pytest.approx(in_s, rel=1e-10)
    # without the Jacobian the integral over m is a different number (by ≈ 2M)
    plain = integrate.quad(lambda m: float(C.breit_wigner(m, MW, GW)), lo, hi, points=[MW], limit=400)[0]
    assert in_m / plain == pytest.approx(2 * MW, rel=2e-3)


def test_running_width_is_a_fixed_width_breit_wigner_at_shifted_parameters():
    m = np.linspace(60.0, 100.0, 101)
    g = GW / MW
    mbar, gbar = MW / math.sqrt(1 + g * g), GW / math.sqrt(1 + g * g)
    assert np.allclose(C.breit_wigner(m, MW, GW), C.breit_wigner_fixed_width(m, mbar, gbar) / (1 + g * g),
                       rtol=1e-12)
    assert (MW - mbar) * 1000 == pytest.approx(27.0, abs=0.1)          # MeV, W
    mz, gz = C.Z_MASS_PDG, C.Z_WIDTH_PDG
    assert (mz - mz / math.sqrt(1 + (gz / mz) ** 2)) * 1000 == pytest.approx(34.1, abs=0.1)   # MeV, Z


def test_mass_derivative_and_width_scaling():
    m = np.linspace(60.0, 100.0, 41)
    h = 1e-5
    fd = (np.log(C.breit_wigner(m, MW + h, GW)) - np.log(C.breit_wigner(m, MW - h, GW))) / (2 * h)
    assert np.allclose(C.dlog_breit_wigner_dmass(m, MW, GW), fd, rtol=1e-6, atol=1e-8)
    fd_m = (np.log(C.breit_wigner_mass_density(m, MW + h, GW))
            - np.log(C.breit_wigner_mass_density(m, MW - h, GW))) / (2 * h)
    assert np.allclose(C.dlog_breit_wigner_dmass(m, MW, GW), fd_m, rtol=1e-6, atol=1e-8)
    assert C.width_for_mass(2 * MW, MW, GW) == pytest.approx(8 * GW)
    with pytest.raises(ValueError):
        C.width_for_mass(MW, 0.0, GW)


def test_the_generator_samples_the_density_in_m():
    from wmnb.universe import load_card
    from wmnb.universe import physics as ph

    tp = ph.theory_point(load_card("nominal")["physics"], "wplus")
    m = np.linspace(50.0, 150.0, 1001)
    assert np.array_equal(ph.lineshape(m, tp), C.breit_wigner_mass_density(m, tp.mass, tp.width))
