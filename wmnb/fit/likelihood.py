"""The negative log-likelihood in TensorFlow (float64), with exact gradients and Hessians.

    NLL(x) = sum_b f_b(n_b(x)) + 1/2 sum_{nuisances k} (x_k - theta0_k)^2 + 1/2 sum_{priors} ((x_j - c_j)/s_j)^2

``f_b`` is the saturated Poisson term with the Barlow-Beeston-lite parameter ``beta_b`` profiled
analytically (gamma constraint with ``k_b = n0_b^2 / (bb_scale^2 sum_p sumw2_pb)`` effective MC
events and global observable ``beta0_b`` = 1):

    beta_b = (d_b + k_b beta0_b) / (n_b + k_b)
    f_b    = beta n - d + d log(d / (beta n)) + k (beta - beta0 + beta0 log(beta0 / beta))

Gradients come from ``tf.GradientTape``.  The Hessian is assembled exactly by the chain rule
through the sparse structure: with ``u_c = phi_c(x)`` and ``n_b = sum_p nom_pb exp((K^T u)_pb)``,

    d2NLL/du du^T = K diag(f'_b n_pb) K^T + J diag(f''_b) J^T,   J_cb = sum_p K_c,pb n_pb,

where the per-bin derivatives ``f'`` and ``f''`` (and the mixed ones with respect to the data
and ``beta0`` needed for global impacts) are themselves obtained by TF autodiff of ``f_b``.
Both sparse products are one CSR sparse x sparse matmul (cuSPARSE on a GPU), so the cost
scales with the number of parameter pairs sharing a bin, not with parameters^2 x bins.
:meth:`Likelihood.hessian_autodiff` (``tape.jacobian`` of the gradient) is the brute-force
reference used by the tests.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from .model import LIN, LOG, NUIS, SQ, Model

DT = tf.float64


def _csr(indices: tf.Tensor, values: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """CSR sparse matrix from row-major-sorted COO ``indices`` (int64 [nnz, 2])."""
    return tf.raw_ops.SparseTensorToCSRSparseMatrix(indices=indices, values=values, dense_shape=shape)


class Likelihood:
    """TF graph of a :class:`Model`'s NLL. Data and global observables are variables (no retracing)."""

    #: the Hessian's chain rule and diagonal on the sparse factors' entries (True) or on the
    #: dense product (False); None: whichever makes fewer temporaries for the model
    ENTRY_PATH: bool | None = None

    def __init__(self, model: Model, data: np.ndarray | None = None):
        m = model
        self.model = m
        self.N, self.C, self.P, self.B = m.nparams, len(m.rows_param), m.nprocs, m.nbins
        P, B, C, N = self.P, self.B, self.C, self.N
        PB = P * B
        self.nom = tf.constant(m.nominal.ravel(), DT)
        rp = m.rows_param.astype(np.int64)
        self.rows_param = tf.constant(rp)
        self.rows_tf = tf.constant(m.rows_tf.astype(np.int32))
        #: one row per parameter, in order (rows may still be log or square: see _dphi)
        self.identity_map = bool(C == N and np.array_equal(rp, np.arange(N)))
        self.all_linear = bool(np.all(m.rows_tf == LIN))
        kr, kc, kv = m.k_row.astype(np.int64), m.k_col.astype(np.int64), m.k_val.astype(np.float64)
        self.k_col = tf.constant(kc)
        self.k_val = tf.constant(kv)
        # K^T [PB, C] for the exponent, sorted by (pb, c)
        srt = np.lexsort((kr, kc))
        self.KT = tf.sparse.SparseTensor(np.stack([kc[srt], kr[srt]], 1), kv[srt], [PB, C])
        # J [C, B]: entries (c, b) = unique pairs of (row, col % B); map K entries onto them
        jkey = kr * B + kc % B
        ukey, jmap = np.unique(jkey, return_inverse=True)
        self.jmap = tf.constant(jmap.astype(np.int64))
        self.nJ = int(ukey.size)
        jr, jb = ukey // B, ukey % B
        self.J_idx = np.stack([jr, jb], 1)
        self.k_b = tf.constant(kc % B)
        self.k_row = tf.constant(kr)
        self.j_b = tf.constant(jb)
        # M = [K | J | I] as [C, PB + B (+ C)]; the left factor carries the weights.  The chain
        # rule of non-linear rows scales the sparse factors' entries where they are fewer than
        # the C^2 of the dense product (large models: no n x n temporary), else the product.
        # With one row per parameter and the entry path (fold_diag) the diagonal of the
        # Hessian (constraints, priors, phi'' terms) rides along as the identity block I: the
        # product is then the Hessian itself
        blocks = [np.stack([kr, kc], 1), np.stack([jr, PB + jb], 1)]
        # (the entry path makes ~5 entry-sized temporaries, the dense one ~3 n x n: chapter 08's
        # model, with more entries than C^2, keeps the dense one; the paper-sized benchmark,
        # 1.2 M entries against 24 M, takes the entry path)
        auto = 5 * (kr.size + jr.size) < 3 * C * C
        self.sparse_scale = bool(auto if self.ENTRY_PATH is None else self.ENTRY_PATH)
        self.fold_diag = self.identity_map and self.sparse_scale
        self.j_row = tf.constant(jr if self.sparse_scale else np.zeros(0, np.int64))  # the K entries': k_row
        ncol = PB + B
        if self.fold_diag:
            blocks.append(np.stack([np.arange(C), ncol + np.arange(C)], 1))
            ncol += C
        mi = np.concatenate(blocks)
        order = np.lexsort((mi[:, 1], mi[:, 0]))
        self.m_order = tf.constant(order.astype(np.int64))
        self.m_idx = tf.constant(mi[order])
        self.m_shape = tf.constant([C, ncol], tf.int64)
        mt = mi[:, ::-1]
        order_t = np.lexsort((mt[:, 1], mt[:, 0]))
        self.mt_order = tf.constant(order_t.astype(np.int64))
        self.mt_idx = tf.constant(mt[order_t])
        self.mt_shape = tf.constant([ncol, C], tf.int64)
        # Barlow-Beeston lite
        n0 = m.nominal.sum(0)
        var = m.sumw2.sum(0) * m.bb_scale**2
        self.bb_on = m.bb_mode != "none"
        mask = (var > 0) & (n0 > 0) & self.bb_on
        kstat = np.where(mask, n0**2 / np.where(mask, var, 1.0), 1.0)
        self.bbmask = tf.constant(mask)
        self.kstat = tf.constant(kstat, DT)
        # constraints and priors
        self.constrained = tf.constant(m.kinds == NUIS)
        cons = (m.kinds == NUIS).astype(np.float64)
        prior_w = np.where(np.isfinite(m.prior_sigma), 1.0 / np.where(np.isfinite(m.prior_sigma), m.prior_sigma, 1.0) ** 2, 0.0)
        self.cons_w = tf.constant(cons, DT)
        self.prior_w = tf.constant(prior_w, DT)
        self.prior_c = tf.constant(m.default_values(), DT)
        # variables: observed data and global observables
        self.data = tf.Variable(np.asarray(m.data if data is None else data, np.float64), dtype=DT, trainable=False)
        self.theta0 = tf.Variable(np.zeros(N), dtype=DT, trainable=False)
        self.beta0 = tf.Variable(np.ones(B), dtype=DT, trainable=False)
        self.compile = True
        self._ncalls: dict[str, int] = {}
        self._compiled: dict[str, Callable[..., Any]] = {}

    # ---------------------------------------------------------------- state
    def set_data(self, data: np.ndarray) -> None:
        data = np.asarray(data, np.float64).ravel()
        if data.shape != (self.B,):
            raise ValueError(f"data has {data.size} bins, the model {self.B}")
        if np.any(data < 0) or not np.all(np.isfinite(data)):
            raise ValueError("data must be finite and >= 0")
        self.data.assign(data)

    def set_global_obs(self, theta0: np.ndarray | None = None, beta0: np.ndarray | None = None) -> None:
        self.theta0.assign(np.zeros(self.N) if theta0 is None else np.asarray(theta0, np.float64))
        self.beta0.assign(np.ones(self.B) if beta0 is None else np.asarray(beta0, np.float64))

    # ---------------------------------------------------------------- building blocks
    def _u(self, x: tf.Tensor) -> tf.Tensor:
        xv = tf.gather(x, self.rows_param)
        is_log = tf.equal(self.rows_tf, LOG)
        safe = tf.where(is_log, xv, tf.ones_like(xv))
        return tf.where(tf.equal(self.rows_tf, LIN), xv,
                        tf.where(tf.equal(self.rows_tf, SQ), xv * xv, tf.math.log(safe)))

    def _dphi(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """phi'(x) and phi''(x) per row."""
        xv = tf.gather(x, self.rows_param)
        one, zero = tf.ones_like(xv), tf.zeros_like(xv)
        is_lin, is_sq = tf.equal(self.rows_tf, LIN), tf.equal(self.rows_tf, SQ)
        d1 = tf.where(is_lin, one, tf.where(is_sq, 2.0 * xv, 1.0 / xv))
        d2 = tf.where(is_lin, zero, tf.where(is_sq, 2.0 * one, -1.0 / (xv * xv)))
        return d1, d2

    def _npb(self, x: tf.Tensor) -> tf.Tensor:
        expo = tf.sparse.sparse_dense_matmul(self.KT, self._u(x)[:, None])[:, 0]
        return self.nom * tf.exp(expo)

    def _bin_nll(self, n: tf.Tensor, d: tf.Tensor, beta0: tf.Tensor,
                 beta_fixed: tf.Tensor | None = None) -> tf.Tensor:
        k = self.kstat
        if beta_fixed is None:
            beta = (d + k * beta0) / (n + k)
        else:
            beta = beta_fixed
        beta = tf.where(self.bbmask, beta, tf.ones_like(beta))
        bn = beta * n
        f = bn - d + tf.math.xlogy(d, d) - tf.math.xlogy(d, bn)
        fc = k * (beta - beta0 + tf.math.xlogy(beta0, beta0) - tf.math.xlogy(beta0, beta))
        return f + tf.where(self.bbmask, fc, tf.zeros_like(fc))

    def _beta(self, n: tf.Tensor) -> tf.Tensor:
        beta = (self.data + self.kstat * self.beta0) / (n + self.kstat)
        return tf.where(self.bbmask, beta, tf.ones_like(beta))

    def _nll(self, x: tf.Tensor) -> tf.Tensor:
        n = tf.reduce_sum(tf.reshape(self._npb(x), [self.P, self.B]), 0)
        dx = x - self.theta0
        pc = x - self.prior_c
        return (tf.reduce_sum(self._bin_nll(n, self.data, self.beta0))
                + 0.5 * tf.reduce_sum(self.cons_w * dx * dx) + 0.5 * tf.reduce_sum(self.prior_w * pc * pc))


    # ---------------------------------------------------------------- eager first, compiled when reused
    #: calls of a function run eagerly before it is traced with tf.function: one-off fits of big
    #: models skip tracing (seconds), toys and scans reuse the traced graph
    EAGER_CALLS = 2

    def _run(self, name: str, *args: tf.Tensor) -> Any:
        """``_<name>_impl(*args)``; the public methods below give its return type."""
        n = self._ncalls.get(name, 0)
        self._ncalls[name] = n + 1
        impl = getattr(self, f"_{name}_impl")
        if n < self.EAGER_CALLS or not self.compile:
            return impl(*args)
        fn = self._compiled.get(name)
        if fn is None:
            sig = [tf.TensorSpec([None], DT)] + ([tf.TensorSpec([None, None], DT)] if len(args) == 2 else [])
            fn = self._compiled[name] = tf.function(impl, input_signature=sig, reduce_retracing=True)
        return fn(*args)

    def value(self, x: tf.Tensor) -> tf.Tensor:
        """See ``_value_impl``."""
        return self._run("value", x)

    def value_and_grad(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """See ``_value_and_grad_impl``."""
        return self._run("value_and_grad", x)

    def value_grad_hess(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """See ``_value_grad_hess_impl``."""
        return self._run("value_grad_hess", x)

    def hessian_beta_fixed(self, x: tf.Tensor) -> tf.Tensor:
        """See ``_hessian_beta_fixed_impl``."""
        return self._run("hessian_beta_fixed", x)

    def hessian_autodiff(self, x: tf.Tensor) -> tf.Tensor:
        """See ``_hessian_autodiff_impl``."""
        return self._run("hessian_autodiff", x)

    def yields(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """See ``_yields_impl``."""
        return self._run("yields", x)

    def global_responses(self, x: tf.Tensor, r: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """See ``_global_responses_impl``."""
        return self._run("global_responses", x, r)

    def bin_terms(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        """See ``_bin_terms_impl``."""
        return self._run("bin_terms", x)

    def jacobian_yields(self, x: tf.Tensor) -> tf.Tensor:
        """See ``_jacobian_yields_impl``."""
        return self._run("jacobian_yields", x)

    # ---------------------------------------------------------------- implementations
    def _value_impl(self, x: tf.Tensor) -> tf.Tensor:
        """NLL at ``x``."""
        return self._nll(x)

    def _value_and_grad_impl(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as t:
            t.watch(x)
            f = self._nll(x)
        return f, t.gradient(f, x)

    def _bin_derivs(self, n: tf.Tensor) -> dict[str, tf.Tensor]:
        """Per-bin derivatives of f_b by autodiff (f_b depends on n_b, d_b, beta0_b only)."""
        d, b0 = self.data, self.beta0
        with tf.GradientTape(persistent=True) as t2:
            t2.watch([n, d, b0])
            with tf.GradientTape() as t1:
                t1.watch(n)
                f = tf.reduce_sum(self._bin_nll(n, d, b0))
            f1 = t1.gradient(f, n)
            s1 = tf.reduce_sum(f1)
        f2, f1d, f1b0 = t2.gradient(s1, [n, d, b0], unconnected_gradients="zero")
        # beta held at its fitted value (for the stat-only and bin-by-bin-stat nominal impacts)
        beta_hat = tf.stop_gradient(self._beta(n))
        with tf.GradientTape() as t4:
            t4.watch(n)
            with tf.GradientTape() as t3:
                t3.watch(n)
                ff = tf.reduce_sum(self._bin_nll(n, d, b0, beta_fixed=beta_hat))
            g = tf.reduce_sum(t3.gradient(ff, n))
        f2_fixed = t4.gradient(g, n)
        del t2
        return {"f1": f1, "f2": f2, "f1d": f1d, "f1b0": f1b0, "f2_fixed": f2_fixed}

    def _assemble(self, x: tf.Tensor, npb: tf.Tensor, f1: tf.Tensor, f2: tf.Tensor,
                  data_only: bool = False) -> tf.Tensor:
        """Exact Hessian in x from the per-bin derivatives (see module docstring)."""
        n_of_k = tf.gather(npb, self.k_col)
        jval = tf.math.unsorted_segment_sum(self.k_val * n_of_k, self.jmap, self.nJ)
        w1 = tf.gather(f1, self.k_b) * n_of_k  # f'_b n_pb on the K entries
        left = tf.concat([self.k_val * w1, jval * tf.gather(f2, self.j_b)], 0)
        right = tf.concat([self.k_val, jval], 0)
        if not self.sparse_scale:
            return self._assemble_dense(x, left, right, w1, data_only)
        diag_u = tf.zeros([self.C], DT)
        if not self.all_linear:
            # chain rule u = phi(x): D1 H_u D1, phi'(x) of each entry's row on both factors
            d1, d2 = self._dphi(x)
            s = tf.concat([tf.gather(d1, self.k_row), tf.gather(d1, self.j_row)], 0)
            left, right = left * s, right * s
            gu = tf.math.unsorted_segment_sum(self.k_val * w1, self.k_row, self.C)
            diag_u = d2 * gu
        prior = tf.zeros([self.N], DT) if data_only else self.cons_w + self.prior_w
        if self.fold_diag:
            left = tf.concat([left, diag_u + prior], 0)
            right = tf.concat([right, tf.ones([self.C], DT)], 0)
        h = self._product(left, right)
        if self.fold_diag:
            return h
        # several rows per parameter: sum them (rows and columns) into the parameters
        h = tf.math.unsorted_segment_sum(h, self.rows_param, self.N)
        h = tf.transpose(tf.math.unsorted_segment_sum(tf.transpose(h), self.rows_param, self.N))
        diag = tf.math.unsorted_segment_sum(diag_u, self.rows_param, self.N) + prior
        return tf.linalg.set_diag(h, tf.linalg.diag_part(h) + diag)

    def _product(self, left: tf.Tensor, right: tf.Tensor) -> tf.Tensor:
        """Dense M_left M_right^T from the factors' entry values (in M's entry order).  The
        sparse operands and product are this function's locals: run eagerly, they are freed
        before the caller's dense steps."""
        a = _csr(self.m_idx, tf.gather(left, self.m_order), self.m_shape)
        b = _csr(self.mt_idx, tf.gather(right, self.mt_order), self.mt_shape)
        prod = tf.raw_ops.SparseMatrixSparseMatMul(a=a, b=b, type=DT)
        return tf.raw_ops.CSRSparseMatrixToDense(sparse_input=prod, type=DT)

    def _assemble_dense(self, x: tf.Tensor, left: tf.Tensor, right: tf.Tensor, w1: tf.Tensor,
                        data_only: bool) -> tf.Tensor:
        """:meth:`_assemble` with the chain rule and the diagonal on the dense product (fewer
        temporaries where the factors' entries outnumber the product's n x n)."""
        hu = self._product(left, right)
        gu = tf.math.unsorted_segment_sum(self.k_val * w1, self.k_row, self.C)
        if self.identity_map and self.all_linear:
            h = hu
        else:
            d1, d2 = self._dphi(x)
            ht = d1[:, None] * hu * d1[None, :]
            h = tf.math.unsorted_segment_sum(ht, self.rows_param, self.N)
            h = tf.transpose(tf.math.unsorted_segment_sum(tf.transpose(h), self.rows_param, self.N))
            h += tf.linalg.diag(tf.math.unsorted_segment_sum(d2 * gu, self.rows_param, self.N))
        if data_only:
            return h
        return h + tf.linalg.diag(self.cons_w + self.prior_w)

    def _value_grad_hess_impl(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """NLL, gradient (autodiff) and exact Hessian (structured chain rule) at ``x``."""
        with tf.GradientTape() as t:
            t.watch(x)
            f = self._nll(x)
        g = t.gradient(f, x)
        npb = self._npb(x)
        n = tf.reduce_sum(tf.reshape(npb, [self.P, self.B]), 0)
        der = self._bin_derivs(n)
        return f, g, self._assemble(x, npb, der["f1"], der["f2"])

    def _hessian_beta_fixed_impl(self, x: tf.Tensor) -> tf.Tensor:
        """Hessian with the BB-lite parameters held at their fitted values (not profiled)."""
        npb = self._npb(x)
        n = tf.reduce_sum(tf.reshape(npb, [self.P, self.B]), 0)
        der = self._bin_derivs(n)
        return self._assemble(x, npb, der["f1"], der["f2_fixed"])

    def _hessian_autodiff_impl(self, x: tf.Tensor) -> tf.Tensor:
        """Reference Hessian: ``tape.jacobian`` of the autodiff gradient (small models only)."""
        with tf.GradientTape(persistent=True) as t2:
            t2.watch(x)
            with tf.GradientTape() as t1:
                t1.watch(x)
                f = self._nll(x)
            g = t1.gradient(f, x)
        return t2.jacobian(g, x, experimental_use_pfor=False)

    def _yields_impl(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-process yields [P, B] and the fitted BB-lite factors beta [B] at ``x``."""
        npb = tf.reshape(self._npb(x), [self.P, self.B])
        return npb, self._beta(tf.reduce_sum(npb, 0))

    def _global_responses_impl(self, x: tf.Tensor, r: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Data and beta0 responses of linear combinations ``r`` [N, m] of parameters.

        Returns ``dstat`` [m, B] = r^T H^-1-weighted derivatives d^2NLL/dx dd_b contracted with
        ``r`` (pass ``r = C[:, poi]``), and the same for ``beta0``: the change of the POI per
        unit change of each data count and each beta0.
        """
        npb = self._npb(x)
        n = tf.reduce_sum(tf.reshape(npb, [self.P, self.B]), 0)
        der = self._bin_derivs(n)
        d1, _ = self._dphi(x)
        ru = tf.gather(r, self.rows_param) * d1[:, None]  # [C, m]
        # dn_b/du_c = J_cb; (J^T ru)_b for each column of ru
        jval = tf.math.unsorted_segment_sum(self.k_val * tf.gather(npb, self.k_col), self.jmap, self.nJ)
        J = tf.sparse.SparseTensor(self.J_idx, jval, [self.C, self.B])
        jr = tf.sparse.sparse_dense_matmul(J, ru, adjoint_a=True)  # [B, m]
        return tf.transpose(jr * der["f1d"][:, None]), tf.transpose(jr * der["f1b0"][:, None])

    def _bin_terms_impl(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        """Per-bin derivatives, the values of J (entries ``J_idx``) and phi' per row at ``x``."""
        npb = self._npb(x)
        n = tf.reduce_sum(tf.reshape(npb, [self.P, self.B]), 0)
        der = self._bin_derivs(n)
        der["jval"] = tf.math.unsorted_segment_sum(self.k_val * tf.gather(npb, self.k_col), self.jmap, self.nJ)
        der["d1"] = self._dphi(x)[0]
        return der

    def _jacobian_yields_impl(self, x: tf.Tensor) -> tf.Tensor:
        """dense d n_b / d x [N, B] (for post-fit uncertainties; moderate sizes)."""
        npb = self._npb(x)
        d1, _ = self._dphi(x)
        jval = tf.math.unsorted_segment_sum(self.k_val * tf.gather(npb, self.k_col), self.jmap, self.nJ)
        J = tf.scatter_nd(self.J_idx, jval, [self.C, self.B]) * d1[:, None]
        return tf.math.unsorted_segment_sum(J, self.rows_param, self.N)
