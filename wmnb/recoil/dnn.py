"""Semi-parametric DNN regression of the hadronic recoil.

The PF recoil u_PF under-measures and smears the true recoil H = -q_T(gen).  Rather than
morphing quantiles, a small fully connected network predicts, per event, the *conditional
density* of two targets expressed relative to the PF recoil:

* ``t1 = ln(|H| / |u_PF|)`` — the log of the scale correction;
* ``t2 = wrap(phi(H) - phi(u_PF))`` in (-pi, pi] — the angle correction.

Each target has a double-sided exponential-tailed Gaussian density (:func:`tailed_gauss_logpdf`):
a Gaussian core of mean mu and width sigma, joined at ``mu - a_L sigma`` and ``mu + a_R sigma``
to exponential tails whose slopes make the density and its first derivative continuous.  The two
targets are taken as independent given the features, so the network has 8 outputs and is trained
by minimising the weighted mean negative log-likelihood.

The features (:func:`features`) are rotation invariant: every estimator's recoil is expressed in
the PF recoil's frame, so the network never sees the (physically irrelevant) azimuth.

Persistence (:meth:`RecoilDNN.save`) uses Keras' native ``.keras`` format plus a JSON sidecar —
no pickles.  The network itself outputs raw numbers; the map to (mu, ln sigma, ln a_L, ln a_R)
and the standardisations live here in plain functions, so loading needs no custom Keras objects.

Limitation: the angle target's density lives on the real line, not on the circle.  That is
exact enough while sigma_2 << pi (q_T above a few GeV); at very low q_T, where the angle is
almost uniform, the probability the density puts beyond +-pi is simply lost, and the PIT and
the summed-pdf closure of the angle degrade there.

The module is standalone (numpy, scipy, tensorflow): it imports nothing from :mod:`wmnb`.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import special

# TensorFlow's C++ start-up notices (oneDNN, CPU features) are not the book's business
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

__all__ = [
    "A_MAX",
    "A_MIN",
    "FEATURES",
    "FEATURE_NAMES",
    "FORMAT",
    "PARAMS",
    "PT_FLOOR",
    "TARGETS",
    "DNNError",
    "RecoilDNN",
    "corrected_recoil",
    "features",
    "pit",
    "summed_pdf",
    "tailed_gauss_cdf",
    "tailed_gauss_logpdf",
    "tailed_gauss_logpdf_np",
    "tailed_gauss_pdf",
    "tailed_gauss_ppf",
    "targets",
    "wrap_angle",
]

#: the input columns :func:`features` is built from
FEATURES: tuple[str, ...] = (
    "ut_x", "ut_y",
    "tkmet_ut_x", "tkmet_ut_y",
    "puppimet_ut_x", "puppimet_ut_y",
    "met_sumet", "tkmet_sumet", "puppimet_sumet",
    "npv", "n_charged",
)
#: the columns of the array :func:`features` returns, in order
FEATURE_NAMES: tuple[str, ...] = (
    "log1p_ut_pf",
    "slog_tk_par", "slog_tk_perp", "log1p_ut_tk",
    "slog_puppi_par", "slog_puppi_perp", "log1p_ut_puppi",
    "log1p_sumet_pf", "log1p_sumet_tk", "log1p_sumet_puppi",
    "npv", "n_charged",
)
#: the columns of the array :func:`targets` returns
TARGETS: tuple[str, ...] = ("log_scale", "dphi")
#: the keys of a parameter dictionary (:meth:`RecoilDNN.predict`), each (n, 2)
PARAMS: tuple[str, ...] = ("mu", "sigma", "al", "ar")
#: the floor (GeV) on |u_PF| and |H|: below it the log-scale target would diverge, and the
#: direction of a vector this short is meaningless anyway; 0.1 GeV is far below the resolution
PT_FLOOR = 0.1
#: the range the tail parameters are confined to: below ~0.3 the "core" is a cusp, above ~5
#: the tails carry < 1e-6 of the probability and the parameter is unconstrained by the data
A_MIN, A_MAX = 0.3, 5.0
#: the range ln(sigma) is clipped to in the loss (in standardised target units): a guard
#: against a diverging step, far outside anything a sane fit reaches
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -9.0, 4.0
#: the format tag of the JSON sidecar
FORMAT = "wmnb-recoil-dnn-1"

_LOG_A_MIN, _LOG_A_MAX = math.log(A_MIN), math.log(A_MAX)
_SQRT_HALF_PI = math.sqrt(0.5 * math.pi)
_RERUN = "rerun chapter 04"
_N_RAW = 4 * len(TARGETS)
#: events per forward pass in predict/summed_pdf: bounds memory for multi-million-event samples
_CHUNK = 65536


class DNNError(ValueError):
    """A recoil-DNN input, fit or artefact problem (a :class:`ValueError`)."""


# ---------------------------------------------------------------------------------------------
# the density
# ---------------------------------------------------------------------------------------------

def tailed_gauss_logpdf(t: Any, mu: Any, log_sigma: Any, log_al: Any, log_ar: Any) -> tf.Tensor:
    """ln f(t) of the double-sided exponential-tailed Gaussian, in TensorFlow (differentiable).

    With z = (t - mu)/sigma the unnormalised shape is exp(-z^2/2) on [-a_L, a_R],
    exp(a_L^2/2 + a_L z) below and exp(a_R^2/2 - a_R z) above; its integral over z is
    ``sqrt(pi/2) [erf(a_L/sqrt2) + erf(a_R/sqrt2)] + exp(-a_L^2/2)/a_L + exp(-a_R^2/2)/a_R``.
    ln a is clipped to [ln A_MIN, ln A_MAX] and ln sigma to [LOG_SIGMA_MIN, LOG_SIGMA_MAX].
    The arguments broadcast; the dtype is that of ``t`` (float32 in training, float64 in tests).
    """
    t = tf.convert_to_tensor(t)
    dtype = t.dtype
    # dtype_hint: a Python float must become a float64 tensor when t is float64, not float32
    mu, log_sigma, log_al, log_ar = (tf.cast(tf.convert_to_tensor(v, dtype_hint=dtype), dtype)
                                     for v in (mu, log_sigma, log_al, log_ar))
    log_sigma = tf.clip_by_value(log_sigma, LOG_SIGMA_MIN, LOG_SIGMA_MAX)
    al = tf.exp(tf.clip_by_value(log_al, _LOG_A_MIN, _LOG_A_MAX))
    ar = tf.exp(tf.clip_by_value(log_ar, _LOG_A_MIN, _LOG_A_MAX))
    z = (t - mu) * tf.exp(-log_sigma)
    # every branch is a polynomial in z, finite everywhere: tf.where then has finite gradients
    core = -0.5 * tf.square(z)
    left = 0.5 * tf.square(al) + al * z
    right = 0.5 * tf.square(ar) - ar * z
    log_shape = tf.where(z < -al, left, tf.where(z > ar, right, core))
    inv_sqrt2 = tf.constant(1.0 / math.sqrt(2.0), dtype)
    norm = (tf.constant(_SQRT_HALF_PI, dtype) * (tf.math.erf(al * inv_sqrt2) + tf.math.erf(ar * inv_sqrt2))
            + tf.exp(-0.5 * tf.square(al)) / al + tf.exp(-0.5 * tf.square(ar)) / ar)
    return log_shape - log_sigma - tf.math.log(norm)


def _check_shape_params(sigma: np.ndarray, al: np.ndarray, ar: np.ndarray) -> None:
    """The numpy twins need sigma, a_L, a_R > 0 (they do not clip: they are the pure formula)."""
    for name, v in (("sigma", sigma), ("al", al), ("ar", ar)):
        if not np.all(v > 0):
            raise DNNError(f"tailed Gaussian: {name} must be > 0 (min {np.min(v)!r})")


def _norm_np(al: np.ndarray, ar: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left-tail integral, core integral, total) of the unnormalised shape in z."""
    left = np.exp(-0.5 * al**2) / al
    core = _SQRT_HALF_PI * (special.erf(al / math.sqrt(2.0)) + special.erf(ar / math.sqrt(2.0)))
    right = np.exp(-0.5 * ar**2) / ar
    return left, core, left + core + right


def tailed_gauss_logpdf_np(t: Any, mu: Any, sigma: Any, al: Any, ar: Any) -> np.ndarray:
    """The numpy twin of :func:`tailed_gauss_logpdf` in terms of sigma, a_L, a_R (no clipping)."""
    t, mu, sigma, al, ar = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (t, mu, sigma, al, ar)))
    _check_shape_params(sigma, al, ar)
    z = (t - mu) / sigma
    log_shape = np.where(z < -al, 0.5 * al**2 + al * z, np.where(z > ar, 0.5 * ar**2 - ar * z, -0.5 * z**2))
    return log_shape - np.log(sigma) - np.log(_norm_np(al, ar)[2])


def tailed_gauss_pdf(t: Any, mu: Any, sigma: Any, al: Any, ar: Any) -> np.ndarray:
    """The density f(t) (numpy, float64)."""
    return np.exp(tailed_gauss_logpdf_np(t, mu, sigma, al, ar))


def tailed_gauss_cdf(t: Any, mu: Any, sigma: Any, al: Any, ar: Any) -> np.ndarray:
    """The closed-form CDF F(t) (numpy, float64): the probability integral transform of :func:`pit`.

    Below the left junction F = exp(a_L^2/2 + a_L z)/a_L / N; in the core it adds
    sqrt(pi/2) [erf(z/sqrt2) + erf(a_L/sqrt2)] to the left-tail integral; above the right
    junction 1 - F = exp(a_R^2/2 - a_R z)/a_R / N (computed as such, so no cancellation).
    """
    t, mu, sigma, al, ar = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (t, mu, sigma, al, ar)))
    _check_shape_params(sigma, al, ar)
    z = (t - mu) / sigma
    left, _, norm = _norm_np(al, ar)
    # the tail exponents are clipped at 0 so the branch np.where discards cannot overflow; the
    # kept branch never reaches the clip (its exponent is <= -a^2/2 < 0)
    f_left = np.exp(np.minimum(0.5 * al**2 + al * z, 0.0)) / al
    f_core = left + _SQRT_HALF_PI * (special.erf(z / math.sqrt(2.0)) + special.erf(al / math.sqrt(2.0)))
    upper = np.exp(np.minimum(0.5 * ar**2 - ar * z, 0.0)) / ar
    return np.where(z < -al, f_left / norm, np.where(z > ar, 1.0 - upper / norm, f_core / norm))


def tailed_gauss_ppf(p: Any, mu: Any, sigma: Any, al: Any, ar: Any) -> np.ndarray:
    """The closed-form inverse of :func:`tailed_gauss_cdf` (numpy): for sampling toys."""
    p, mu, sigma, al, ar = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (p, mu, sigma, al, ar)))
    _check_shape_params(sigma, al, ar)
    if np.any((p <= 0) | (p >= 1)):
        raise DNNError("tailed_gauss_ppf: probabilities must lie in (0, 1)")
    left, core, norm = _norm_np(al, ar)
    c = p * norm  # the unnormalised cumulative integral to invert
    upper = np.maximum((1.0 - p) * norm, 1e-300)  # the unnormalised integral above the point
    z_left = (np.log(np.maximum(c * al, 1e-300)) - 0.5 * al**2) / al
    arg = np.clip((c - left) / _SQRT_HALF_PI - special.erf(al / math.sqrt(2.0)), -1.0, 1.0)
    z_core = math.sqrt(2.0) * special.erfinv(arg)
    z_right = (0.5 * ar**2 - np.log(upper * ar)) / ar
    z = np.where(c < left, z_left, np.where(c > left + core, z_right, z_core))
    return mu + sigma * z


# ---------------------------------------------------------------------------------------------
# features and targets
# ---------------------------------------------------------------------------------------------

def _column(cols: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """A column as float64, failing by name when it is missing or not finite."""
    if name not in cols:
        raise KeyError(f"the recoil-DNN input lacks column {name!r}; rerun chapter 01")
    v = np.asarray(cols[name], dtype=np.float64)
    bad = ~np.isfinite(v)
    if np.any(bad):
        raise DNNError(f"column {name!r} has {int(bad.sum())} non-finite value(s) (NaN/inf); rerun chapter 01")
    return v


def wrap_angle(phi: Any) -> np.ndarray:
    """An angle wrapped into (-pi, pi]."""
    return np.pi - np.mod(np.pi - np.asarray(phi, dtype=np.float64), 2.0 * np.pi)


def _slog(v: np.ndarray) -> np.ndarray:
    """sign(v) ln(1 + |v|): compresses the long tails of a signed component, keeps its sign."""
    return np.sign(v) * np.log1p(np.abs(v))


def features(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    """The (n, len(FEATURE_NAMES)) float32 feature array of :data:`FEATURE_NAMES`.

    Rotation invariant: the Tk and PUPPI recoils enter as their components along and across
    the PF recoil (sign(v) ln(1+|v|) of the GeV value), plus ln(1 + |u|) of every recoil and
    of every sumEt; npv and n_charged enter as they are (the standardisation of
    :class:`RecoilDNN` scales them).  An event with u_PF = 0 has no frame; it gets the x axis.
    A missing column raises :class:`KeyError`, a non-finite one :class:`DNNError`, both naming it.
    """
    c = {name: _column(cols, name) for name in FEATURES}
    ux, uy = c["ut_x"], c["ut_y"]
    upf = np.hypot(ux, uy)
    phi = np.arctan2(uy, ux)
    cos, sin = np.cos(phi), np.sin(phi)
    out: dict[str, np.ndarray] = {"log1p_ut_pf": np.log1p(upf)}
    for tag, prefix in (("tk", "tkmet_ut"), ("puppi", "puppimet_ut")):
        vx, vy = c[f"{prefix}_x"], c[f"{prefix}_y"]
        out[f"slog_{tag}_par"] = _slog(vx * cos + vy * sin)
        out[f"slog_{tag}_perp"] = _slog(vy * cos - vx * sin)
        out[f"log1p_ut_{tag}"] = np.log1p(np.hypot(vx, vy))
    for tag, name in (("pf", "met_sumet"), ("tk", "tkmet_sumet"), ("puppi", "puppimet_sumet")):
        # a sumEt is >= 0 by construction; the clamp only shields log1p from a rounding -0.0...
        out[f"log1p_sumet_{tag}"] = np.log1p(np.maximum(c[name], 0.0))
    out["npv"], out["n_charged"] = c["npv"], c["n_charged"]
    x = np.stack([out[name] for name in FEATURE_NAMES], axis=1).astype(np.float32)
    _check_finite(x, FEATURE_NAMES, "feature")
    return x


def _check_finite(x: np.ndarray, names: Sequence[str], what: str) -> None:
    """Raise naming the first column of ``x`` that holds a NaN/inf."""
    bad = ~np.isfinite(x)
    if np.any(bad):
        j = int(np.flatnonzero(bad.any(axis=0))[0])
        name = names[j] if j < len(names) else f"#{j}"
        raise DNNError(f"{what} {name!r} has {int(bad[:, j].sum())} non-finite value(s) (NaN/inf)")


def targets(cols: Mapping[str, np.ndarray], true_x: Any, true_y: Any) -> np.ndarray:
    """The (n, 2) float32 targets (ln(|H|/|u_PF|), wrap(phi_H - phi_PF)) of :data:`TARGETS`.

    ``true_x``, ``true_y`` are the true recoil H (in simulation -q_T(gen)).  |u_PF| and |H| are
    floored at :data:`PT_FLOOR` (0.1 GeV) so the log stays finite; such events keep the angle
    atan2 gives (0 for an exact zero vector).
    """
    ux, uy = _column(cols, "ut_x"), _column(cols, "ut_y")
    hx, hy = np.asarray(true_x, dtype=np.float64), np.asarray(true_y, dtype=np.float64)
    if hx.shape != ux.shape or hy.shape != ux.shape:
        raise DNNError(f"targets: the true recoil has shape {hx.shape}/{hy.shape}, the PF recoil {ux.shape}")
    for name, v in (("true_x", hx), ("true_y", hy)):
        if not np.all(np.isfinite(v)):
            raise DNNError(f"targets: {name} has non-finite values")
    t1 = np.log(np.maximum(np.hypot(hx, hy), PT_FLOOR) / np.maximum(np.hypot(ux, uy), PT_FLOOR))
    t2 = wrap_angle(np.arctan2(hy, hx) - np.arctan2(uy, ux))
    return np.stack([t1, t2], axis=1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the network head and loss
# ---------------------------------------------------------------------------------------------

def _head(raw: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(mu, ln sigma, ln a_L, ln a_R), each (n, 2), from the (n, 8) raw outputs.

    Layout: raw[:, 0:2] = mu, raw[:, 2:4] = ln sigma, raw[:, 4:6] and raw[:, 6:8] map to ln a
    through a sigmoid onto [ln A_MIN, ln A_MAX] (a smooth bound keeps a gradient everywhere,
    where a hard clip would freeze a tail parameter that strayed outside).  All in
    standardised target units.
    """
    span = _LOG_A_MAX - _LOG_A_MIN
    return (raw[:, 0:2], raw[:, 2:4],
            _LOG_A_MIN + span * tf.sigmoid(raw[:, 4:6]), _LOG_A_MIN + span * tf.sigmoid(raw[:, 6:8]))


def _nll(y_std: tf.Tensor, raw: tf.Tensor) -> tf.Tensor:
    """Per-event NLL (n,) in standardised target units: the two targets are independent."""
    mu, log_sigma, log_al, log_ar = _head(raw)
    return -tf.reduce_sum(tailed_gauss_logpdf(y_std, mu, log_sigma, log_al, log_ar), axis=1)


def _batch_nll(y_std: tf.Tensor, raw: tf.Tensor, weight: tf.Tensor) -> tf.Tensor:
    """The weighted mean NLL of a batch; the weights are pre-normalised to mean 1 over the
    training set, so a plain batch mean of w * nll is an unbiased estimate of the full loss."""
    return tf.reduce_mean(weight * _nll(y_std, raw))


def _build_model(n_features: int, hidden: Sequence[int], seed: int) -> Any:
    """The MLP: ELU hidden layers, a linear 8-output layer started near zero (every event
    begins at a standard tailed Gaussian in standardised units: a gentle first step)."""
    inputs = tf.keras.Input(shape=(n_features,), name="features")
    h = inputs
    for j, width in enumerate(hidden):
        h = tf.keras.layers.Dense(int(width), activation="elu", name=f"hidden_{j}",
                                  kernel_initializer=tf.keras.initializers.GlorotUniform(seed=seed + j))(h)
    out = tf.keras.layers.Dense(_N_RAW, name="raw_params",
                                kernel_initializer=tf.keras.initializers.RandomNormal(stddev=0.01, seed=seed + 1000),
                                bias_initializer="zeros")(h)
    return tf.keras.Model(inputs, out, name="recoil_dnn")


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------

def _as_2d(x: Any, width: int | None, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2 or (width is not None and a.shape[1] != width):
        raise DNNError(f"{what} must be (n, {width if width is not None else 'F'}), got shape {a.shape}")
    return a


@dataclass
class RecoilDNN:
    """A trained recoil DNN: the Keras model, the feature and target standardisations, metadata.

    Build one with :meth:`fit` or :meth:`load`.  ``x_mean``/``x_scale`` standardise the features,
    ``y_mean``/``y_scale`` the targets (the network works in standardised units; :meth:`predict`
    returns parameters in target units).  ``history`` holds ``train_nll`` (the running mean over
    each epoch's batches) and ``val_nll`` (after each epoch), per event in target units.
    """

    model: Any
    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: np.ndarray
    y_scale: np.ndarray
    hidden: tuple[int, ...]
    feature_names: tuple[str, ...] = FEATURE_NAMES
    history: dict[str, list[float]] = field(default_factory=dict)
    train_time_s: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    # ---- training -------------------------------------------------------------------------

    @classmethod
    def fit(cls, x: Any, y: Any, weight: Any = None, *, hidden: Sequence[int] = (64, 64, 64), epochs: int = 50,
            batch_size: int = 1024, learning_rate: float = 1e-3, validation_fraction: float = 0.2, seed: int = 0,
            patience: int = 6, lr_factor: float = 0.5, feature_names: Sequence[str] | None = None, verbose: bool = False) -> RecoilDNN:
        """Train on features ``x`` (n, F), targets ``y`` (n, 2) and optional ``weight`` (n,).

        Adam with a custom loop (the model stays uncompiled, so it saves without the loss);
        a random ``validation_fraction`` of the events is held out, and training stops after
        ``patience`` epochs without a better validation NLL, restoring the best weights
        (``validation_fraction=0``: all epochs, last weights); every ``max(1, patience // 2)``
        epochs without improvement the learning rate is multiplied by ``lr_factor``.  Weights must be >= 0 with a
        positive sum; they are normalised to mean 1 on the training part.

        The validation events are the first ``round(validation_fraction * n)`` of
        ``np.random.default_rng(seed).permutation(n)``.

        Determinism: ``tf.keras.utils.set_random_seed(seed)`` plus seeded initialisers and a
        numpy generator for the split and the shuffling make a refit with the same seed
        bit-identical on one CPU thread; with several intra-op threads the reduction order may
        vary, and predictions agree to float32 round-off (~1e-5 relative) only.
        """
        if tf.keras.backend.backend() != "tensorflow":
            raise DNNError(f"the recoil DNN needs the TensorFlow Keras backend, not {tf.keras.backend.backend()!r}")
        xa = _as_2d(x, None, "x")
        ya = _as_2d(y, len(TARGETS), "y")
        n = xa.shape[0]
        if ya.shape[0] != n:
            raise DNNError(f"x has {n} events, y {ya.shape[0]}")
        names = tuple(feature_names) if feature_names is not None else (
            FEATURE_NAMES if xa.shape[1] == len(FEATURE_NAMES) else tuple(f"x{j}" for j in range(xa.shape[1])))
        if len(names) != xa.shape[1]:
            raise DNNError(f"{len(names)} feature names for {xa.shape[1]} features")
        _check_finite(xa, names, "feature")
        _check_finite(ya, TARGETS, "target")
        w = np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64)
        if w.shape != (n,):
            raise DNNError(f"weight must be ({n},), got {w.shape}")
        if not np.all(np.isfinite(w)):
            raise DNNError("weights must be finite")
        if np.any(w < 0):
            raise DNNError(f"{int((w < 0).sum())} negative weight(s): the NLL needs weights >= 0")
        if not 0.0 <= validation_fraction < 1.0:
            raise DNNError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
        if epochs < 1 or batch_size < 1 or patience < 1:
            raise DNNError("epochs, batch_size and patience must be >= 1")
        if not 0.0 < lr_factor <= 1.0:
            raise DNNError(f"lr_factor must be in (0, 1], got {lr_factor}")

        tf.keras.utils.set_random_seed(seed)
        rng = np.random.default_rng(seed)
        order = rng.permutation(n)
        n_val = round(validation_fraction * n)
        val, train = order[:n_val], order[n_val:]
        if len(train) == 0 or w[train].sum() <= 0 or (n_val > 0 and w[val].sum() <= 0):
            raise DNNError("the training (or validation) part has no positive weight")

        # standardisations from the training part: constant features get scale 1, not 1/0
        x_mean = xa[train].mean(axis=0).astype(np.float64)
        x_scale = xa[train].std(axis=0).astype(np.float64)
        x_scale[x_scale <= 0] = 1.0
        y_mean = ya[train].mean(axis=0).astype(np.float64)
        y_scale = ya[train].std(axis=0).astype(np.float64)
        y_scale[y_scale <= 0] = 1.0
        xs = ((xa - x_mean) / x_scale).astype(np.float32)
        ys = ((ya - y_mean) / y_scale).astype(np.float32)
        ws = (w / w[train].mean()).astype(np.float32)
        # the NLL in target units = the standardised one + sum ln(y_scale) (Jacobian)
        jac = float(np.log(y_scale).sum())

        hidden_t = tuple(int(h) for h in hidden)
        model = _build_model(xa.shape[1], hidden_t, seed)
        optimizer = tf.keras.optimizers.Adam(learning_rate=learning_rate)

        @tf.function(reduce_retracing=True)
        def step(xb: tf.Tensor, yb: tf.Tensor, wb: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                loss = _batch_nll(yb, model(xb, training=True), wb)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        def val_nll() -> float:
            total = 0.0
            for s in range(0, n_val, _CHUNK):
                idx = val[s:s + _CHUNK]
                total += float(tf.reduce_sum(ws[idx] * _nll(ys[idx], model(xs[idx], training=False))))
            return total / float(ws[val].sum()) + jac

        plateau = max(1, patience // 2)
        history: dict[str, list[float]] = {"train_nll": [], "val_nll": []}
        best, best_epoch, best_weights, stale = math.inf, -1, model.get_weights(), 0
        t0 = time.perf_counter()
        epochs_run = 0
        for epoch in range(epochs):
            perm = train[rng.permutation(len(train))]
            run_sum, run_w = 0.0, 0.0
            for s in range(0, len(perm), batch_size):
                idx = perm[s:s + batch_size]
                loss = float(step(xs[idx], ys[idx], ws[idx]))
                run_sum += loss * len(idx)
                run_w += float(ws[idx].sum())
            epochs_run += 1
            history["train_nll"].append(run_sum / max(run_w, 1e-30) + jac)
            if not math.isfinite(history["train_nll"][-1]):
                raise DNNError(f"the recoil DNN fit diverged in epoch {epoch} (training NLL "
                               f"{history['train_nll'][-1]}); lower the learning rate ({learning_rate})")
            if n_val == 0:
                continue
            v = val_nll()
            history["val_nll"].append(v)
            if verbose:
                print(f"epoch {epoch}: train {history['train_nll'][-1]:.5f} val {v:.5f}")
            if v < best:
                best, best_epoch, best_weights, stale = v, epoch, model.get_weights(), 0
            else:
                stale += 1
                if stale >= patience:
                    break
                if stale % plateau == 0:
                    # a plateau: a smaller step settles into the minimum the noise hides
                    optimizer.learning_rate.assign(float(optimizer.learning_rate) * lr_factor)
        train_time = time.perf_counter() - t0
        if n_val > 0:
            model.set_weights(best_weights)
        settings = {"epochs": epochs, "epochs_run": epochs_run, "best_epoch": best_epoch if n_val else epochs_run - 1,
                    "batch_size": batch_size, "learning_rate": learning_rate,
                    "validation_fraction": validation_fraction, "seed": seed, "patience": patience,
                    "lr_factor": lr_factor, "final_learning_rate": float(optimizer.learning_rate),
                    "n_train": len(train), "n_val": n_val, "best_val_nll": best if n_val else None,
                    "events_epochs_per_s": len(train) * epochs_run / max(train_time, 1e-9)}
        return cls(model=model, x_mean=x_mean, x_scale=x_scale, y_mean=y_mean, y_scale=y_scale, hidden=hidden_t,
                   feature_names=names, history=history, train_time_s=train_time, settings=settings)

    # ---- inference ------------------------------------------------------------------------

    def predict(self, x: Any) -> dict[str, np.ndarray]:
        """The per-event density parameters in target units: mu, sigma, al, ar, each (n, 2)."""
        xa = _as_2d(x, len(self.x_mean), "x")
        _check_finite(xa, self.feature_names, "feature")
        xs = ((xa - self.x_mean) / self.x_scale).astype(np.float32)
        parts: list[list[np.ndarray]] = [[] for _ in PARAMS]
        for s in range(0, max(len(xs), 1), _CHUNK):
            mu, log_sigma, log_al, log_ar = _head(self.model(xs[s:s + _CHUNK], training=False))
            # the loss clips ln sigma: predict reports the sigma the loss used
            log_sigma = tf.clip_by_value(log_sigma, LOG_SIGMA_MIN, LOG_SIGMA_MAX)
            for j, v in enumerate((mu, log_sigma, log_al, log_ar)):
                parts[j].append(np.asarray(v, dtype=np.float64))
        mu, log_sigma, log_al, log_ar = (np.concatenate(p, axis=0) for p in parts)
        return {"mu": self.y_mean + self.y_scale * mu, "sigma": self.y_scale * np.exp(log_sigma),
                "al": np.exp(log_al), "ar": np.exp(log_ar)}

    # ---- persistence ----------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """The JSON sidecar's content."""
        return {"format": FORMAT, "feature_names": list(self.feature_names), "targets": list(TARGETS),
                "hidden": list(self.hidden), "x_mean": self.x_mean.tolist(), "x_scale": self.x_scale.tolist(),
                "y_mean": self.y_mean.tolist(), "y_scale": self.y_scale.tolist(), "history": self.history,
                "train_time_s": self.train_time_s, "settings": self.settings}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``<stem>.keras`` (native Keras format) and the JSON sidecar ``<stem>.json``.

        Each is written to a temporary file and renamed into place, so a crash never leaves a
        half-written file (though a crash between the two renames pairs a new model with the
        old sidecar; :meth:`load` then only catches a change of widths).  Returns the ``.keras``
        path.
        """
        path = Path(path)
        if path.suffix != ".keras":
            raise DNNError(f"{path}: the model file must end in .keras")
        with _atomic(path) as tmp:
            self.model.save(tmp)
        with _atomic(path.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(self.metadata(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RecoilDNN:
        """Read what :meth:`save` wrote; a missing, corrupt or inconsistent file raises
        :class:`DNNError` naming it.  The model is loaded with ``compile=False``: it was never
        compiled (the loss lives in this module), so no custom objects are needed."""
        path = Path(path)
        side = path.with_suffix(".json")
        for p in (path, side):
            if not p.is_file():
                raise DNNError(f"recoil DNN file {p} is missing; {_RERUN}")
        try:
            meta = json.loads(side.read_text())
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise DNNError(f"format {meta.get('format') if isinstance(meta, dict) else None!r}, want {FORMAT!r}")
            names = tuple(str(s) for s in meta["feature_names"])
            arrays = {k: np.asarray(meta[k], dtype=np.float64) for k in ("x_mean", "x_scale", "y_mean", "y_scale")}
            hidden = tuple(int(h) for h in meta["hidden"])
        except (ValueError, KeyError, TypeError) as err:
            raise DNNError(f"recoil DNN sidecar {side} is corrupt ({err}); {_RERUN}") from err
        if (arrays["x_mean"].shape != (len(names),) or arrays["x_scale"].shape != (len(names),)
                or arrays["y_mean"].shape != (len(TARGETS),) or arrays["y_scale"].shape != (len(TARGETS),)):
            raise DNNError(f"recoil DNN sidecar {side}: standardisation shapes do not match; {_RERUN}")
        try:
            model = tf.keras.models.load_model(path, compile=False)
        except Exception as err:  # keras raises a zoo of types (zipfile, OSError, ValueError ...)
            raise DNNError(f"recoil DNN model {path} is corrupt ({type(err).__name__}: {err}); {_RERUN}") from err
        n_in, n_out = model.input_shape[-1], model.output_shape[-1]
        if n_in != len(names) or n_out != _N_RAW:
            raise DNNError(f"recoil DNN model {path} maps {n_in} -> {n_out}, the sidecar wants "
                           f"{len(names)} -> {_N_RAW}; {_RERUN}")
        return cls(model=model, hidden=hidden, feature_names=names, history=dict(meta.get("history", {})),
                   train_time_s=float(meta.get("train_time_s", 0.0)), settings=dict(meta.get("settings", {})),
                   **arrays)


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary path next to ``path`` (same suffix: Keras checks it), renamed onto ``path``
    only if the block succeeds.  Not :func:`wmnb.artefacts.atomic_path`, whose temporary names
    end in ``.tmp``, which Keras' ``save`` refuses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# using the predictions
# ---------------------------------------------------------------------------------------------

def _params(params: Mapping[str, Any], n: int | None = None) -> tuple[np.ndarray, ...]:
    """The (mu, sigma, al, ar) arrays of a parameter dictionary, checked to be (n, 2)."""
    try:
        arrays = tuple(np.asarray(params[k], dtype=np.float64) for k in PARAMS)
    except KeyError as err:
        raise DNNError(f"parameter dictionary lacks {err}; want keys {PARAMS}") from err
    shape = arrays[0].shape
    if len(shape) != 2 or shape[1] != len(TARGETS) or any(a.shape != shape for a in arrays) or (
            n is not None and shape[0] != n):
        raise DNNError(f"parameters must all be ({n if n is not None else 'n'}, 2), got "
                       f"{[a.shape for a in arrays]}")
    return arrays


def pit(y: Any, params: Mapping[str, Any]) -> np.ndarray:
    """The probability integral transform (n, 2): each target's predicted CDF at its true value.

    Uniform on [0, 1] for a calibrated model; a too-wide density piles it up at 0.5, a too
    narrow one at 0 and 1, a biased mean tilts it.
    """
    ya = np.asarray(y, dtype=np.float64)
    mu, sigma, al, ar = _params(params, ya.shape[0] if ya.ndim == 2 else None)
    if ya.shape != mu.shape:
        raise DNNError(f"targets {ya.shape} and parameters {mu.shape} differ")
    return tailed_gauss_cdf(ya, mu, sigma, al, ar)


def corrected_recoil(cols: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The DNN's estimate of H: the PF recoil scaled by exp(mu_1) and rotated by mu_2.

    mu is each target's mode (the core's peak: the tails fall monotonically away from it), so
    this is the *mode-of-core* estimate, not the conditional mean of H (which would need
    E[exp(t1)] and E[cos t2] and is pulled by the tails).  |u_PF| is floored at
    :data:`PT_FLOOR` as in :func:`targets`.
    """
    ux, uy = _column(cols, "ut_x"), _column(cols, "ut_y")
    mu = _params(params, ux.shape[0])[0]
    r = np.maximum(np.hypot(ux, uy), PT_FLOOR) * np.exp(mu[:, 0])
    phi = np.arctan2(uy, ux) + mu[:, 1]
    return r * np.cos(phi), r * np.sin(phi)


def summed_pdf(t_grid: Any, params: Mapping[str, Any], weight: Any = None) -> np.ndarray:
    """The "sum of predicted pdfs" closure (G, 2): sum_i w_i f_i(t) on a grid of each target.

    ``t_grid`` is (G,) (the same grid for both targets) or (G, 2) (one column per target).  The
    result is in events per unit of the target: times a bin width it is the expected content of
    a histogram of the true targets, if the model is calibrated.  Events are processed in chunks
    so the (events x grid) intermediate stays small.
    """
    mu, sigma, al, ar = _params(params)
    n = mu.shape[0]
    grid = np.asarray(t_grid, dtype=np.float64)
    if grid.ndim == 1:
        grid = np.repeat(grid[:, None], len(TARGETS), axis=1)
    if grid.ndim != 2 or grid.shape[1] != len(TARGETS):
        raise DNNError(f"t_grid must be (G,) or (G, 2), got {np.shape(t_grid)}")
    w = np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64)
    if w.shape != (n,):
        raise DNNError(f"weight must be ({n},), got {w.shape}")
    out = np.zeros_like(grid)
    step = max(1, _CHUNK * 16 // max(len(grid), 1))
    for s in range(0, n, step):
        sl = slice(s, s + step)
        for j in range(len(TARGETS)):
            f = tailed_gauss_pdf(grid[None, :, j], mu[sl, j, None], sigma[sl, j, None], al[sl, j, None],
                                 ar[sl, j, None])
            out[:, j] += w[sl] @ f
    return out
