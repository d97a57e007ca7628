"""Binned profile-likelihood fitter in TensorFlow (float64, CPU or GPU).

    from wmnb.fit import ModelBuilder, Model, fit, FitResult, scan, toys
    b = ModelBuilder(data_hist)
    b.add_process("W", w_hist, signal=True)           # Weight storage -> MC sumw2 from variances
    b.add_poi_shape("mass", "W", up=w_up, down=w_dn)  # theta = 1 is the +100 MeV template
    b.add_shape_systematic("effStat0", ["W", "Z"], up={"W": ..., "Z": ...}, down={...}, group="eff")
    b.add_norm_systematic("lumi", ["W", "Z"], 1.012, group="lumi")
    b.bb_scale = 1.25
    model = b.build(); model.save("model.h5")
    res = fit(model, blind={"mass": 1234})
    res.value("mass"), res.error("mass"), res.impacts_nominal("mass"), res.gof()

See ``book/fitter.md`` for the likelihood, the minimiser and the impact definitions.
"""
import os as _os

# quieten TensorFlow C++ logging (failed trial Cholesky factorisations log warnings) unless asked
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .model import Model, ModelBuilder, ModelError, ModelWarning  # noqa: E402
from .result import FitResult, Yields  # noqa: E402
from .fitter import fit, fit_datasets, scan, toys  # noqa: E402

__all__ = ["Model", "ModelBuilder", "ModelError", "ModelWarning", "FitResult", "Yields", "fit", "fit_datasets",
           "scan", "toys"]
