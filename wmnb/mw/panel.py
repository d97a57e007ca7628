"""Interactive panel: move m_W and any nuisance, watch the prediction and data/prediction move.

In JupyterLab :func:`interactive_panel` returns an ipywidgets box (sliders + a live figure);
the static book shows :func:`static_panel`, the same view rendered at a few slider settings.
"""
from __future__ import annotations

import numpy as np

from wmnb.style import cms_label

from .fitting import MwFit
from .model import ModelSpec
from .plots import parameter_vector, per_process, unroll
from ..templatefit.reffit import RefModel


def _draw(ax, rax, spec: ModelSpec, model: RefModel, x: np.ndarray, x_ref: np.ndarray, label: str) -> None:
    pred = unroll(per_process(spec, x, model).sum(0), spec.mask)
    ref = unroll(per_process(spec, x_ref, model).sum(0), spec.mask)
    data = unroll(spec.data, spec.mask)
    edges = np.arange(pred.size + 1)
    centres = edges[:-1] + 0.5
    ax.stairs(pred, edges, color="tab:red", label=label)
    ax.errorbar(centres, data, yerr=np.sqrt(data), fmt="k.", ms=2, lw=0.5, label="Data")
    ax.legend(fontsize=9, loc="upper right")
    ax.set_ylabel("Events / bin")
    with np.errstate(divide="ignore", invalid="ignore"):
        rax.plot(centres, data / pred, "k.", ms=2)
        rax.stairs(pred / ref, edges, color="tab:red", label="pred. / best fit")
    rax.axhline(1, color="grey", lw=0.5)
    rax.set_ylim(0.95, 1.05)
    rax.set_ylabel("ratio")
    rax.legend(fontsize=9, loc="lower right")


def _setting(spec: ModelSpec, model: RefModel, fit: MwFit, delta_mev: float, nuisance: str | None,
             value: float) -> np.ndarray:
    # the slider is relative to the best fit: an absolute scale would reveal the blinded m_W
    over = {"mass": fit.values["mass"] + delta_mev}
    if nuisance:
        over[nuisance] = value
    return parameter_vector(model, spec, fit, over)


def static_panel(spec: ModelSpec, fit: MwFit, nuisance: str, settings: list[tuple[float, float]]):
    """The panel rendered at ``settings`` = [(m_W − best fit in MeV, nuisance value in σ), ...]."""
    import matplotlib.pyplot as plt

    model = RefModel(spec)
    x_ref = parameter_vector(model, spec, fit)
    fig, axes = plt.subplots(2 * len(settings), 1, figsize=(14, 4.2 * len(settings)),
                             gridspec_kw={"height_ratios": [3, 1] * len(settings)})
    for k, (m, v) in enumerate(settings):
        x = _setting(spec, model, fit, m, nuisance, v)
        _draw(axes[2 * k], axes[2 * k + 1], spec, model, x, x_ref,
              f"m_W {m:+.0f} MeV from best fit, {nuisance} = {v:+.1f}σ")
    cms_label(axes[0])
    fig.tight_layout()
    return fig


def interactive_panel(spec: ModelSpec, fit: MwFit, nuisance: str | None = None):
    """An ipywidgets panel: sliders for m_W (relative to the best fit) and a nuisance chosen
    from a dropdown (its value in σ)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    model = RefModel(spec)
    x_ref = parameter_vector(model, spec, fit)
    mass = widgets.FloatSlider(value=0.0, min=-300, max=300, step=5, description="Δm_W [MeV]",
                               continuous_update=False)
    names = list(fit.nuisances)
    choice = widgets.Dropdown(options=names, value=nuisance or names[0], description="nuisance")
    value = widgets.FloatSlider(value=0.0, min=-3, max=3, step=0.1, description="value [σ]",
                                continuous_update=False)
    out = widgets.Output()

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            fig, (ax, rax) = plt.subplots(2, 1, figsize=(14, 6), sharex=True,
                                          gridspec_kw={"height_ratios": (3, 1)})
            x = _setting(spec, model, fit, mass.value, choice.value, value.value)
            _draw(ax, rax, spec, model, x, x_ref,
                  f"m_W {mass.value:+.0f} MeV from best fit, {choice.value} {value.value:+.1f}σ")
            cms_label(ax)
            plt.show()

    for w in (mass, choice, value):
        w.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([mass, choice, value]), out])
