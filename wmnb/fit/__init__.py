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

from typing import TYPE_CHECKING, Any  # noqa: E402

if TYPE_CHECKING:
    from .fitter import fit, fit_datasets, scan, toys
    from .model import Model, ModelBuilder, ModelError, ModelWarning
    from .result import FitResult, Yields

#: public name -> submodule; imported on first use, so that reading a model (numpy only) or
#: ``wmnb fit --help`` does not wait for TensorFlow, and ``wmnb fit`` can read its model while
#: TensorFlow is being imported
_LAZY = {"Model": "model", "ModelBuilder": "model", "ModelError": "model", "ModelWarning": "model",
         "FitResult": "result", "Yields": "result",
         "fit": "fitter", "fit_datasets": "fitter", "scan": "fitter", "toys": "fitter"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = ["Model", "ModelBuilder", "ModelError", "ModelWarning", "FitResult", "Yields", "fit", "fit_datasets",
           "scan", "toys"]
