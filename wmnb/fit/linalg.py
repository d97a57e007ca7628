"""Dense symmetric positive-definite linear algebra on the device that holds the Hessian.

On a GPU the factorisations run in TensorFlow (cuSOLVER); on a CPU they call LAPACK through
scipy (``potrf``/``potrs``/``potri``), which on this kind of machine is faster than TensorFlow's
Eigen kernels and gives the inverse in n^3 instead of 7n^3/3 flops. Every function takes a
``tf.Tensor`` or a numpy array and returns numpy results except the factor, which stays in the
backend's own type.
"""
from __future__ import annotations

import functools
from typing import TypeAlias

import numpy as np
import scipy.linalg.lapack as lapack
import tensorflow as tf

#: a dense matrix (or vector) on either backend
Matrix: TypeAlias = "tf.Tensor | np.ndarray"


@functools.lru_cache(maxsize=1)
def on_gpu() -> bool:
    """True when TensorFlow sees a GPU (and ``WMNB_FIT_CPU`` is not set)."""
    import os

    if os.environ.get("WMNB_FIT_CPU"):
        return False
    return bool(tf.config.list_physical_devices("GPU"))


def _np(a: Matrix) -> np.ndarray:
    return a.numpy() if isinstance(a, tf.Tensor) else np.asarray(a)


def cholesky(a: Matrix) -> Matrix | None:
    """Lower Cholesky factor of ``a``, or ``None`` if ``a`` is not positive definite."""
    if on_gpu():
        try:
            L = tf.linalg.cholesky(tf.convert_to_tensor(a))
        except tf.errors.InvalidArgumentError:
            return None
        return L if bool(tf.reduce_all(tf.math.is_finite(tf.linalg.diag_part(L)))) else None
    c, info = lapack.dpotrf(_np(a), lower=1, clean=1, overwrite_a=0)
    return c if info == 0 else None


def cho_solve(L: Matrix, b: Matrix) -> np.ndarray:
    """Solve ``(L L^T) x = b`` for a vector or matrix ``b``."""
    b = _np(b)
    if isinstance(L, tf.Tensor):
        bb = tf.constant(b if b.ndim == 2 else b[:, None])
        x = tf.linalg.cholesky_solve(L, bb).numpy()
        return x if b.ndim == 2 else x[:, 0]
    x, info = lapack.dpotrs(L, b, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"potrs failed (info={info})")
    return x


def cho_inverse(L: Matrix, overwrite: bool = False) -> np.ndarray:
    """Full inverse ``(L L^T)^-1`` (symmetric).  ``overwrite=True`` (CPU) computes it in the
    memory of the numpy factor ``L``, which is then gone: at thousands of parameters that is
    two n x n matrices fewer at the peak (potri's copy and the symmetrised sum)."""
    if isinstance(L, tf.Tensor):
        n = int(L.shape[0])
        inv = tf.linalg.cholesky_solve(L, tf.eye(n, dtype=L.dtype)).numpy()
        return 0.5 * (inv + inv.T)
    inv, info = lapack.dpotri(L, lower=1, overwrite_c=int(overwrite))
    if info != 0:
        raise np.linalg.LinAlgError(f"potri failed (info={info})")
    # potri fills the lower triangle only; the strict upper one is zero (potrf ran with
    # clean=1): mirror it in place, a block of rows at a time, so no second n x n array
    n = inv.shape[0]
    for i0 in range(0, n, _MIRROR_BLOCK):
        i1 = min(i0 + _MIRROR_BLOCK, n)
        diag = inv[i0:i1, i0:i1]
        diag += np.tril(diag, -1).T
        inv[i0:i1, i1:] = inv[i1:, i0:i1].T
    return inv


#: rows mirrored per block by :func:`cho_inverse` (a 256 x n slice: a few MB at n = 5000)
_MIRROR_BLOCK = 256
