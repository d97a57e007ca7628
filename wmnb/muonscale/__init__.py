"""Chapter 02: muon momentum calibration with J/psi, resolution, closure and dimuon m_Z.

Modules (one job each):

``scale_model``   the per-eta curvature bias dk/k = A - e*k + q*M/k and its inverse
``kinematics``    dimuon invariant mass from (pT, eta, phi)
``binning``       the 4-D (eta+, pT+, eta-, pT-) binning of dimuon events, with a record of
                  skipped (too sparse) bins
``massfit``       thousands of small binned template + exponential fits at once (batched
                  Fisher scoring in numpy)
``paramfit``      chi^2 fit of (A, e, M) per eta bin (and A', M' for the closure) from the 4-D
                  bin scales, with full covariance
``resolution``    (sigma_pT/pT)^2 = a^2 + c^2 pT^2 + b^2/(1 + d^2/pT^2) per eta bin
``uncertainty``   eigenvector variations, closure-derived scaling factor
``correction``    the published correction (``wmnb.corrections`` hook): artefact I/O,
                  data pT correction, simulation smearing, weight-based scale variations
``mz``            the dimuon m_Z fit after calibration
``toys``          toy dimuon samples with known injected biases (tests, benchmarks)
``plots``         the chapter's figures
``chapter``       the pipeline the chapter-02 notebook calls
"""

__all__ = ["chapter", "plots"]
