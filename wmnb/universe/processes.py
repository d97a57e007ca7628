"""Generator-level events of every process: bosons, decays, FSR, tau decays, quarkonia,
nonprompt muons.

Each ``generate_<process>(rng, n, physics)`` returns a :class:`Truth`: ``n`` produced events with
their generator-level content (a GenPart-like table, up to two muons and one electron that the
detector may reconstruct, the true hadronic recoil) and a ``passed`` mask, the generator filter.
The detector simulation (:mod:`wmnb.universe.detector`) turns a :class:`Truth` into
reconstructed objects.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..conventions import ELECTRON_MASS, MUON_MASS, TAU_MASS
from . import kinematics as kin
from . import physics as ph

K_MU = 2          # muon slots per event
N_GEN = 7         # GenPart slots per event (before compaction)
GEN_PT_FILTER = 15.0  # generator filter of the single-muon processes: a muon with pT > 15, |eta| < 2.4
BOSON_CODE = {"wplus": 0, "wminus": 1, "z": 2}

# NanoAOD GenPart statusFlags bits
F_PROMPT, F_TAUDECAY, F_PROMPTTAU, F_DIRTAU, F_DIRPROMPTTAU = 1, 4, 8, 16, 32
F_HARD, F_FROMHARD, F_FIRST, F_LAST = 128, 256, 4096, 8192
FLAGS_V = F_PROMPT | F_HARD | F_FROMHARD | F_FIRST | F_LAST
FLAGS_PRE = F_PROMPT | F_HARD | F_FROMHARD | F_FIRST
FLAGS_POST = F_PROMPT | F_FROMHARD | F_LAST
FLAGS_FINAL = F_PROMPT | F_HARD | F_FROMHARD | F_FIRST | F_LAST
FLAGS_TAU_PRODUCT = F_TAUDECAY | F_PROMPTTAU | F_DIRTAU | F_DIRPROMPTTAU | F_LAST


@dataclass
class Truth:
    """Generator-level content of ``n`` events (arrays with a leading event axis)."""

    n: int
    process: str
    mu_p4: np.ndarray              # (n, K_MU, 4) post-FSR muon four-vectors
    mu_charge: np.ndarray          # (n, K_MU) int
    mu_valid: np.ndarray           # (n, K_MU) bool
    mu_gen: np.ndarray             # (n, K_MU) slot in the GenPart table, -1 if none
    mu_prompt: np.ndarray          # (n, K_MU) bool (False: nonprompt, from hadron decays)
    mu_activity: np.ndarray        # (n, K_MU) extra sum pT in the isolation cone (GeV)
    ele_p4: np.ndarray             # (n, 4) prompt electron (zeros if none)
    ele_charge: np.ndarray         # (n,)
    ele_valid: np.ndarray          # (n,) bool
    had: np.ndarray                # (n, 2) true hadronic recoil (px, py)
    gam: np.ndarray                # (n, 2) sum of FSR photons (px, py)
    extra_u: np.ndarray            # (n, 2) extra recoil mismeasurement (multijet)
    gen: dict[str, np.ndarray]     # GenPart-like table, (n, N_GEN) per field
    genv: dict[str, np.ndarray]    # GenV_* (n,)
    theory: dict[str, np.ndarray]  # y, qt, cos, phi, boson code (-1: no theory weights)
    passed: np.ndarray             # (n,) generator filter
    sv_prob: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (n, K_MU)

    def select(self, mask: np.ndarray) -> "Truth":
        """The events where ``mask`` is true."""
        def cut(x: Any) -> Any:
            if isinstance(x, dict):
                return {k: cut(v) for k, v in x.items()}
            if isinstance(x, np.ndarray) and x.ndim >= 1 and x.shape[0] == self.n:
                return x[mask]
            return x
        kw = {k: cut(getattr(self, k)) for k in self.__dataclass_fields__ if k not in ("n", "process")}
        return Truth(n=int(np.count_nonzero(mask)), process=self.process, **kw)


def _empty(n: int, process: str) -> Truth:
    gen = {k: np.zeros((n, N_GEN), dtype=np.float64) for k in ("pt", "eta", "phi", "mass")}
    gen.update({k: np.zeros((n, N_GEN), dtype=np.int32) for k in ("pdgId", "status", "statusFlags")})
    gen["genPartIdxMother"] = np.full((n, N_GEN), -1, dtype=np.int32)
    gen["valid"] = np.zeros((n, N_GEN), dtype=bool)
    genv = {k: np.zeros(n) for k in ("mass", "pt", "y", "phi", "cosThetaCS", "phiCS")}
    genv["pdgId"] = np.zeros(n, dtype=np.int32)
    return Truth(
        n=n, process=process,
        mu_p4=np.zeros((n, K_MU, 4)), mu_charge=np.zeros((n, K_MU), dtype=np.int32),
        mu_valid=np.zeros((n, K_MU), dtype=bool), mu_gen=np.full((n, K_MU), -1, dtype=np.int32),
        mu_prompt=np.ones((n, K_MU), dtype=bool), mu_activity=np.zeros((n, K_MU)),
        ele_p4=np.zeros((n, 4)), ele_charge=np.zeros(n, dtype=np.int32), ele_valid=np.zeros(n, dtype=bool),
        had=np.zeros((n, 2)), gam=np.zeros((n, 2)), extra_u=np.zeros((n, 2)),
        gen=gen, genv=genv,
        theory={"y": np.zeros(n), "qt": np.zeros(n), "cos": np.zeros(n), "phi": np.zeros(n),
                "boson": np.full(n, -1, dtype=np.int32)},
        passed=np.ones(n, dtype=bool), sv_prob=np.zeros((n, K_MU)),
    )


def _set_gen(t: Truth, slot: int, p4: np.ndarray, pdg: Any, status: int, flags: int, mother: int,
             valid: Any = True, rows: Any = slice(None)) -> None:
    pt, eta, phi = kin.pt_eta_phi(p4)
    g = t.gen
    g["pt"][rows, slot], g["eta"][rows, slot], g["phi"][rows, slot] = pt, eta, phi
    g["mass"][rows, slot] = kin.mass(p4)
    g["pdgId"][rows, slot] = pdg
    g["status"][rows, slot] = status
    g["statusFlags"][rows, slot] = flags
    g["genPartIdxMother"][rows, slot] = mother
    g["valid"][rows, slot] = valid


def _unit_basis(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.where((np.abs(d[:, 2]) < 0.9)[:, None], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0])
    e1 = np.cross(a, d)
    e1 /= np.linalg.norm(e1, axis=-1, keepdims=True)
    return e1, np.cross(d, e1)


def apply_fsr(rng: np.random.Generator, mu: np.ndarray, parent_mass: np.ndarray,
              fsr: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Photon emission off muons (N, 4): returns (muon after FSR, photon, emitted mask)."""
    n = mu.shape[0]
    emit = rng.random(n) < ph.fsr_probability(parent_mass, fsr["strength"], fsr["zmin"])
    photon = np.zeros((n, 4))
    post = mu.copy()
    idx = np.flatnonzero(emit)
    if idx.size:
        p3 = mu[idx, 1:]
        pabs = np.linalg.norm(p3, axis=-1)
        d = p3 / pabs[:, None]
        z = ph.sample_fsr_z(rng, idx.size, fsr["zmin"])
        th0 = MUON_MASS / np.maximum(mu[idx, 0], 1e-3)
        thmax = 0.3
        th = th0 * np.sqrt((1.0 + (thmax / th0) ** 2) ** rng.random(idx.size) - 1.0)
        psi = rng.uniform(0, 2 * np.pi, idx.size)
        e1, e2 = _unit_basis(d)
        kdir = np.cos(th)[:, None] * d + np.sin(th)[:, None] * (np.cos(psi)[:, None] * e1 + np.sin(psi)[:, None] * e2)
        k3 = (z * pabs)[:, None] * kdir
        photon[idx, 1:] = k3
        photon[idx, 0] = np.linalg.norm(k3, axis=-1)
        q3 = p3 - k3
        post[idx, 1:] = q3
        post[idx, 0] = np.sqrt(np.sum(q3 * q3, axis=-1) + MUON_MASS**2)
    return post, photon, emit


def _boson_kinematics(rng: np.random.Generator, n: int, tp: ph.TheoryPoint) -> dict[str, np.ndarray]:
    m = ph.sample_mass(rng, n, tp)
    y = ph.sample_y(rng, n, tp)
    qt = ph.sample_qt(rng, y, tp)
    phi = rng.uniform(-np.pi, np.pi, n)
    cos_t, phics = ph.sample_angles(rng, ph.angular_coefficients(qt, y, tp))
    return {"m": m, "y": y, "qt": qt, "phi": phi, "cos": cos_t, "phics": phics,
            "p4": kin.boson_p4(m, qt, y, phi)}


def _fill_boson(t: Truth, k: dict[str, np.ndarray], pdg: int | np.ndarray, code: int | np.ndarray) -> None:
    t.genv.update({"mass": k["m"], "pt": k["qt"], "y": k["y"], "phi": k["phi"],
                   "cosThetaCS": k["cos"], "phiCS": k["phics"]})
    t.genv["pdgId"][:] = pdg
    t.theory.update({"y": k["y"], "qt": k["qt"], "cos": k["cos"], "phi": k["phics"]})
    t.theory["boson"][:] = code
    t.had[:] = -k["p4"][:, 1:3]
    _set_gen(t, 0, k["p4"], pdg, 62, FLAGS_V, -1)


def _muon_filter(t: Truth) -> np.ndarray:
    pt, eta, _ = kin.pt_eta_phi(t.mu_p4.reshape(-1, 4))
    ok = (pt > GEN_PT_FILTER) & (np.abs(eta) < 2.4)
    return np.any(ok.reshape(t.n, K_MU) & t.mu_valid, axis=1)


def generate_w_munu(rng: np.random.Generator, n: int, physics: dict[str, Any], boson: str) -> Truth:
    """W -> mu nu with FSR; the muon carries the Collins-Soper angles."""
    t = _empty(n, f"{boson}_munu")
    tp = ph.theory_point(physics, boson)
    k = _boson_kinematics(rng, n, tp)
    q = tp.charge
    mu, nu = kin.decay_two_body(k["p4"], k["cos"], k["phics"], MUON_MASS, 0.0)
    post, gamma, emit = apply_fsr(rng, mu, k["m"], physics["fsr"])
    _fill_boson(t, k, 24 * q, BOSON_CODE[boson])
    _set_gen(t, 1, mu, -13 * q, 23, FLAGS_PRE, 0)
    _set_gen(t, 2, nu, 14 * q, 1, FLAGS_FINAL, 0)
    _set_gen(t, 3, post, -13 * q, 1, FLAGS_POST, 1)
    _set_gen(t, 4, gamma, 22, 1, FLAGS_POST, 1, valid=emit)
    t.mu_p4[:, 0], t.mu_charge[:, 0], t.mu_valid[:, 0], t.mu_gen[:, 0] = post, q, True, 3
    t.gam[:] = gamma[:, 1:3]
    t.passed = _muon_filter(t)
    return t


def generate_z_mumu(rng: np.random.Generator, n: int, physics: dict[str, Any]) -> Truth:
    """Z/gamma* -> mu mu with FSR off both muons (theta of the negative muon)."""
    t = _empty(n, "z_mumu")
    tp = ph.theory_point(physics, "z")
    k = _boson_kinematics(rng, n, tp)
    mum, mup = kin.decay_two_body(k["p4"], k["cos"], k["phics"], MUON_MASS, MUON_MASS)
    pm, gm, em = apply_fsr(rng, mum, k["m"], physics["fsr"])
    pp, gp, ep = apply_fsr(rng, mup, k["m"], physics["fsr"])
    _fill_boson(t, k, 23, BOSON_CODE["z"])
    _fill_dimuon_gen(t, mum, mup, pm, pp, gm, gp, em, ep)
    t.passed = _muon_filter(t)
    return t


def _fill_dimuon_gen(t: Truth, mum, mup, pm, pp, gm, gp, em, ep) -> None:
    _set_gen(t, 1, mum, 13, 23, FLAGS_PRE, 0)
    _set_gen(t, 2, mup, -13, 23, FLAGS_PRE, 0)
    _set_gen(t, 3, pm, 13, 1, FLAGS_POST, 1)
    _set_gen(t, 4, pp, -13, 1, FLAGS_POST, 2)
    _set_gen(t, 5, gm, 22, 1, FLAGS_POST, 1, valid=em)
    _set_gen(t, 6, gp, 22, 1, FLAGS_POST, 2, valid=ep)
    t.mu_p4[:, 0], t.mu_p4[:, 1] = pm, pp
    t.mu_charge[:, 0], t.mu_charge[:, 1] = -1, 1
    t.mu_valid[:] = True
    t.mu_gen[:, 0], t.mu_gen[:, 1] = 3, 4
    t.gam[:] = gm[:, 1:3] + gp[:, 1:3]


def _tau_to_lepton(rng: np.random.Generator, tau: np.ndarray, pol: float, lep_mass: float) -> tuple[np.ndarray, np.ndarray]:
    """Collinear tau -> l nu nu: (lepton four-vector, neutrinos' four-vector)."""
    x = ph.sample_tau_x(rng, tau.shape[0], pol)
    p3 = x[:, None] * tau[:, 1:]
    lep = np.concatenate([np.sqrt(np.sum(p3 * p3, axis=-1) + lep_mass**2)[:, None], p3], axis=-1)
    return lep, tau - lep


def generate_w_taunu(rng: np.random.Generator, n: int, physics: dict[str, Any]) -> Truth:
    """W -> tau nu, tau -> mu nu nu (W+ and W- in the ratio of their cross sections)."""
    t = _empty(n, "w_taunu")
    xs = physics["xsec_pb"]
    is_plus = rng.random(n) < xs["wplus_munu"] / (xs["wplus_munu"] + xs["wminus_munu"])
    pol = physics["tau"]["polarisation_w"]
    for boson, rows in (("wplus", is_plus), ("wminus", ~is_plus)):
        idx = np.flatnonzero(rows)
        if not idx.size:
            continue
        tp = ph.theory_point(physics, boson)
        k = _boson_kinematics(rng, idx.size, tp)
        q = tp.charge
        tau, nu = kin.decay_two_body(k["p4"], k["cos"], k["phics"], TAU_MASS, 0.0)
        mu, _ = _tau_to_lepton(rng, tau, pol, MUON_MASS)
        sub = _empty(idx.size, "w_taunu")
        _fill_boson(sub, k, 24 * q, BOSON_CODE[boson])
        _set_gen(sub, 1, tau, -15 * q, 2, FLAGS_PRE | F_LAST, 0)
        _set_gen(sub, 2, nu, 16 * q, 1, FLAGS_FINAL, 0)
        _set_gen(sub, 3, mu, -13 * q, 1, FLAGS_TAU_PRODUCT, 1)
        sub.mu_p4[:, 0], sub.mu_charge[:, 0], sub.mu_valid[:, 0], sub.mu_gen[:, 0] = mu, q, True, 3
        _scatter(t, sub, idx)
    t.passed = _muon_filter(t)
    return t


def _scatter(t: Truth, sub: Truth, idx: np.ndarray) -> None:
    """Copy the events of ``sub`` into rows ``idx`` of ``t``."""
    for name in t.__dataclass_fields__:
        a = getattr(t, name)
        b = getattr(sub, name)
        if isinstance(a, dict):
            for key in a:
                a[key][idx] = b[key]
        elif isinstance(a, np.ndarray) and a.ndim >= 1 and a.shape[0] == t.n:
            a[idx] = b


def generate_z_tautau(rng: np.random.Generator, n: int, physics: dict[str, Any]) -> Truth:
    """Z -> tau tau with at least one tau -> mu nu nu (others: e nu nu or hadrons)."""
    t = _empty(n, "z_tautau")
    tp = ph.theory_point(physics, "z")
    k = _boson_kinematics(rng, n, tp)
    taum, taup = kin.decay_two_body(k["p4"], k["cos"], k["phics"], TAU_MASS, TAU_MASS)
    br_mu, br_e = physics["tau"]["br_mu"], physics["tau"]["br_e"]
    # decay modes (0 mu, 1 e, 2 hadrons) conditioned on at least one muon
    modes = np.empty((n, 2), dtype=np.int64)
    todo = np.arange(n)
    while todo.size:
        u = rng.random((todo.size, 2))
        m = np.where(u < br_mu, 0, np.where(u < br_mu + br_e, 1, 2))
        ok = np.any(m == 0, axis=1)
        modes[todo[ok]] = m[ok]
        todo = todo[~ok]
    _fill_boson(t, k, 23, BOSON_CODE["z"])
    _set_gen(t, 1, taum, 15, 2, FLAGS_PRE | F_LAST, 0)
    _set_gen(t, 2, taup, -15, 2, FLAGS_PRE | F_LAST, 0)
    vis_had = np.zeros((n, 2))
    for j, (tau, q) in enumerate(((taum, -1), (taup, 1))):
        mode = modes[:, j]
        lep_mass = np.where(mode == 0, MUON_MASS, ELECTRON_MASS)
        lep, _ = _tau_to_lepton(rng, tau, 0.0, 0.0)
        # fix the lepton mass (tiny effect on E)
        lep[:, 0] = np.sqrt(np.sum(lep[:, 1:] ** 2, axis=-1) + lep_mass**2)
        pdg = np.where(mode == 0, 13, 11) * (-q)
        _set_gen(t, 3 + j, lep, pdg, 1, FLAGS_TAU_PRODUCT, 1 + j, valid=mode < 2)
        ismu = mode == 0
        t.mu_p4[ismu, j] = lep[ismu]
        t.mu_charge[:, j] = q
        t.mu_valid[:, j] = ismu
        t.mu_gen[:, j] = np.where(ismu, 3 + j, -1)
        ise = mode == 1
        t.ele_p4[ise] = lep[ise]
        t.ele_charge[ise] = q
        t.ele_valid |= ise
        # visible hadronic tau: about half of the tau momentum, part of the hadronic activity
        vis = rng.uniform(0.3, 0.9, n)[:, None] * tau[:, 1:3]
        vis_had += np.where((mode == 2)[:, None], vis, 0.0)
    t.had += vis_had
    t.passed = _muon_filter(t)
    return t


def _generic_w(rng: np.random.Generator, n: int, physics: dict[str, Any], qt_scale: float,
               extra_prob: float, process: str) -> Truth:
    """Top pairs and dibosons, simplified: a leptonically decaying W with a hard, broad q_T
    (harder recoil), plus an extra prompt lepton (e or mu) with probability ``extra_prob``."""
    t = _empty(n, process)
    mw, gw = physics["mw_mev"] / 1000, physics["gw_mev"] / 1000
    m = np.clip(ph.sample_resonance(rng, n, mw, gw), 50.0, 150.0)
    qt = rng.exponential(qt_scale, n)
    y = rng.normal(0.0, 1.3, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    w = kin.boson_p4(m, qt, y, phi)
    q = np.where(rng.random(n) < 0.5, 1, -1)
    cos_t = rng.uniform(-1, 1, n)
    phics = rng.uniform(0, 2 * np.pi, n)
    mu, nu = kin.decay_two_body(w, cos_t, phics, MUON_MASS, 0.0)
    post, gamma, emit = apply_fsr(rng, mu, m, physics["fsr"])
    _set_gen(t, 0, w, 24 * q, 62, FLAGS_V, -1)
    _set_gen(t, 1, mu, -13 * q, 23, FLAGS_PRE, 0)
    _set_gen(t, 2, nu, 14 * q, 1, FLAGS_FINAL, 0)
    _set_gen(t, 3, post, -13 * q, 1, FLAGS_POST, 1)
    _set_gen(t, 4, gamma, 22, 1, FLAGS_POST, 1, valid=emit)
    t.genv.update({"mass": m, "pt": qt, "y": y, "phi": phi, "cosThetaCS": cos_t, "phiCS": phics})
    t.genv["pdgId"][:] = 24 * q
    t.mu_p4[:, 0], t.mu_charge[:, 0], t.mu_valid[:, 0], t.mu_gen[:, 0] = post, q, True, 3
    t.mu_activity[:, 0] = rng.exponential(1.5, n)  # nearby b jets
    # extra lepton
    has = rng.random(n) < extra_prob
    is_mu = rng.random(n) < 0.5
    lpt = 15.0 + rng.exponential(30.0, n)
    leta = rng.normal(0.0, 1.3, n)
    lphi = rng.uniform(-np.pi, np.pi, n)
    lq = -q
    lep = kin.massless_p4(lpt, leta, lphi, np.where(is_mu, MUON_MASS, ELECTRON_MASS))
    xnu = kin.massless_p4(rng.exponential(30.0, n), rng.normal(0, 1.5, n), rng.uniform(-np.pi, np.pi, n))
    xnu[~has] = 0.0
    _set_gen(t, 5, lep, np.where(is_mu, 13, 11) * (-lq), 1, FLAGS_FINAL, -1, valid=has)
    m2 = has & is_mu
    t.mu_p4[m2, 1] = lep[m2]
    t.mu_charge[:, 1] = lq
    t.mu_valid[:, 1] = m2
    t.mu_gen[:, 1] = np.where(m2, 5, -1)
    e2 = has & ~is_mu
    t.ele_p4[e2] = lep[e2]
    t.ele_charge[:] = lq
    t.ele_valid[:] = e2
    lep_sum = post[:, 1:3] + nu[:, 1:3] + gamma[:, 1:3] + np.where(has[:, None], lep[:, 1:3], 0.0) + xnu[:, 1:3]
    t.had[:] = -lep_sum
    t.gam[:] = gamma[:, 1:3]
    t.passed = _muon_filter(t)
    return t


def generate_ttbar(rng: np.random.Generator, n: int, physics: dict[str, Any]) -> Truth:
    """Top-quark pairs with at least one muon (simplified, see :func:`_generic_w`)."""
    td = physics["top_diboson"]
    return _generic_w(rng, n, physics, td["ttbar_qt_scale"], td["ttbar_extra_lepton"], "ttbar")


def generate_diboson(rng: np.random.Generator, n: int, physics: dict[str, Any]) -> Truth:
    """WW/WZ/ZZ with at least one muon (simplified, see :func:`_generic_w`)."""
    td = physics["top_diboson"]
    return _generic_w(rng, n, physics, td["diboson_qt_scale"], td["diboson_extra_lepton"], "diboson")


QCD_PT_FILTER = 20.0


def generate_qcd(rng: np.random.Generator, n: int, physics: dict[str, Any]) -> Truth:
    """QCD multijet with a nonprompt muon from a heavy-flavour decay.

    A latent jet-mismeasurement hardness h ~ Exp(1) sets the fake missing pT (met_scale * h,
    random direction) and also the jet activity around the muon: x = x0 (1 + kappa h^gamma) with
    x0 = (1 - z)/z, z ~ Beta(z_a, z_b) the muon's momentum fraction in its jet; a fraction of x pT
    enters the isolation cone.  Events with large m_T therefore have less isolated muons, and the
    dependence is nonlinear (gamma), so the extended-ABCD extrapolation of the isolation ratio
    from m_T < 40 GeV overestimates the signal-region yield (by ~15 % for the shipped cards).
    A semileptonic neutrino roughly collinear with the muon is added to the true missing pT.
    Generator filter: muon pT > 20 GeV, |eta| < 2.4, cone activity < 1.2 pT (events above can
    never pass the trigger isolation)."""
    npar = physics["nonprompt"]
    t = _empty(n, "qcd")
    pmin, pmax, a = QCD_PT_FILTER, 300.0, npar["pt_power"]
    u = rng.random(n)
    pt = (pmin ** (1 - a) + u * (pmax ** (1 - a) - pmin ** (1 - a))) ** (1 / (1 - a))
    eta = rng.uniform(-2.4, 2.4, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    q = np.where(rng.random(n) < 0.5, 1, -1)
    mu = kin.massless_p4(pt, eta, phi, MUON_MASS)
    h = rng.exponential(1.0, n)
    z = rng.beta(npar["z_a"], npar["z_b"], n)
    x = (1 - z) / z * (1.0 + npar["met_kappa"] * h ** npar["met_gamma"])
    cf = npar["cone_fraction"]
    frac = rng.beta(4.0 * cf + 0.1, 4.0 * (1 - cf) + 0.1, n)
    activity = frac * x * pt
    nu_pt = pt * rng.exponential(npar["neutrino_fraction"], n)
    nu_phi = phi + rng.normal(0.0, 0.15, n)
    nu = np.stack([nu_pt * np.cos(nu_phi), nu_pt * np.sin(nu_phi)], axis=-1)
    mis = npar["met_scale"] * h
    mis_phi = rng.uniform(-np.pi, np.pi, n)
    z_had = np.clip(z, 0.05, 1.0)
    hadron = kin.massless_p4(pt / z_had, eta, phi, 5.279)
    _set_gen(t, 0, hadron, 511 * q, 2, 0, -1)
    _set_gen(t, 1, mu, -13 * q, 1, F_LAST | 2, 0)
    t.mu_p4[:, 0], t.mu_charge[:, 0], t.mu_valid[:, 0], t.mu_gen[:, 0] = mu, q, True, 1
    t.mu_prompt[:, 0] = False
    t.mu_activity[:, 0] = activity
    t.sv_prob[:, 0] = npar["sv_prob"]
    t.had[:] = -(mu[:, 1:3] + nu)
    t.extra_u[:] = np.stack([mis * np.cos(mis_phi), mis * np.sin(mis_phi)], axis=-1)
    t.passed = activity < 1.2 * pt
    return t


def _onium(rng: np.random.Generator, n: int, physics: dict[str, Any], masses: np.ndarray,
           pdg: np.ndarray, pt0: float, power: float, ptmin: float, process: str) -> Truth:
    qq = physics["quarkonia"]
    t = _empty(n, process)
    pt = ph.sample_powerlaw_pt(rng, n, pt0, power, ptmin, 150.0)
    y = rng.uniform(-qq["ymax"], qq["ymax"], n)
    phi = rng.uniform(-np.pi, np.pi, n)
    p4 = kin.boson_p4(masses, pt, y, phi)
    cos_t = rng.uniform(-1, 1, n)
    phics = rng.uniform(0, 2 * np.pi, n)
    mum, mup = kin.decay_two_body(p4, cos_t, phics, MUON_MASS, MUON_MASS)
    pm, gm, em = apply_fsr(rng, mum, masses, physics["fsr"])
    pp, gp, ep = apply_fsr(rng, mup, masses, physics["fsr"])
    _set_gen(t, 0, p4, pdg, 2, F_PROMPT | F_FIRST | F_LAST, -1)
    _fill_dimuon_gen(t, mum, mup, pm, pp, gm, gp, em, ep)
    t.genv.update({"mass": masses, "pt": pt, "y": y, "phi": phi, "cosThetaCS": cos_t, "phiCS": phics})
    t.genv["pdgId"][:] = pdg
    t.had[:] = -p4[:, 1:3]
    mpt, meta, _ = kin.pt_eta_phi(t.mu_p4.reshape(-1, 4))
    ok = ((mpt > 2.5) & (np.abs(meta) < 2.4)).reshape(n, K_MU)
    t.passed = np.all(ok, axis=1)
    return t


def generate_jpsi(rng: np.random.Generator, n: int, physics: dict[str, Any]) -> Truth:
    """Prompt J/psi -> mu mu with pT(J/psi) > 19.5 GeV (the Dimuon20_Jpsi trigger's region),
    isotropic decays."""
    qq = physics["quarkonia"]
    m = ph.sample_resonance(rng, n, qq["jpsi_mass_mev"] / 1000, qq["jpsi_width_mev"] / 1000)
    return _onium(rng, n, physics, m, np.full(n, 443), qq["jpsi_pt0"], qq["jpsi_power"], 19.5, "jpsi")


UPSILON_PDG = np.array([553, 100553, 200553])


def generate_upsilon(rng: np.random.Generator, n: int, physics: dict[str, Any]) -> Truth:
    """Upsilon(1S, 2S, 3S) -> mu mu with pT > 11 GeV."""
    qq = physics["quarkonia"]
    fr = np.asarray(qq["upsilon_fractions"]) / np.sum(qq["upsilon_fractions"])
    state = rng.choice(3, size=n, p=fr)
    m = np.empty(n)
    for s in range(3):
        rows = state == s
        m[rows] = ph.sample_resonance(rng, int(rows.sum()), qq["upsilon_mass_mev"][s] / 1000,
                                      qq["upsilon_width_mev"][s] / 1000)
    return _onium(rng, n, physics, m, UPSILON_PDG[state], qq["upsilon_pt0"], qq["upsilon_power"], 11.0, "upsilon")


def generate_dimuon_bkg(rng: np.random.Generator, n: int, physics: dict[str, Any]) -> Truth:
    """Combinatorial opposite-sign dimuons under the quarkonia (exponential in m_mumu)."""
    qq = physics["quarkonia"]
    in_jpsi = rng.random(n) < qq["bkg_jpsi_fraction"]
    m = np.empty(n)
    for rows, lo, hi, _ptmin in ((in_jpsi, 2.6, 3.6, 18.0), (~in_jpsi, 8.0, 12.0, 11.0)):
        k = int(rows.sum())
        s = qq["bkg_slope_jpsi"]  # p(m) ~ exp(s (m - lo))
        u = rng.random(k)
        m[rows] = lo + np.log1p(u * np.expm1(s * (hi - lo))) / s if s != 0 else lo + u * (hi - lo)
    t = _onium(rng, n, physics, m, np.zeros(n, dtype=np.int64), qq["jpsi_pt0"], qq["jpsi_power"], 11.0, "dimuon_bkg")
    # no parent: the muons are unrelated
    t.gen["valid"][:, 0] = False
    t.gen["genPartIdxMother"][:, 1:] = -1
    t.genv["pdgId"][:] = 0
    return t


GENERATORS: dict[str, Callable[[np.random.Generator, int, dict[str, Any]], Truth]] = {
    "wplus_munu": lambda r, n, p: generate_w_munu(r, n, p, "wplus"),
    "wminus_munu": lambda r, n, p: generate_w_munu(r, n, p, "wminus"),
    "z_mumu": generate_z_mumu,
    "w_taunu": generate_w_taunu,
    "z_tautau": generate_z_tautau,
    "ttbar": generate_ttbar,
    "diboson": generate_diboson,
    "qcd": generate_qcd,
    "jpsi": generate_jpsi,
    "upsilon": generate_upsilon,
    "dimuon_bkg": generate_dimuon_bkg,
}
"""Process name -> generator(rng, n_produced, physics) -> Truth."""
