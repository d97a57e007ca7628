"""Plot style: mplhep's CMS style with a label saying the data are synthetic."""
from __future__ import annotations

from typing import Any

import matplotlib

LUMI_FB = 16.8
LABEL = "Synthetic"


def use_style() -> None:
    """Switch matplotlib to the CMS style (call once at the top of a notebook)."""
    import mplhep

    mplhep.style.use("CMS")
    matplotlib.rcParams["figure.dpi"] = 80
    matplotlib.rcParams["savefig.dpi"] = 100


def cms_label(ax: Any = None, data: bool = True, lumi: float | None = LUMI_FB, **kwargs: Any) -> Any:
    """Put the CMS-style label on ``ax``, always marked *Synthetic* (never real CMS data)."""
    import mplhep

    import matplotlib.pyplot as plt

    label = kwargs.pop("label", LABEL)
    target = ax if ax is not None else plt.gca()
    width_in = target.get_position().width * target.figure.get_figwidth()
    if width_in < 5.5 and "fontsize" not in kwargs:
        # narrow panels (several per row): shrink the label so "CMS Synthetic" and the
        # luminosity text do not overlap
        kwargs["fontsize"] = max(9.0, 22.0 * width_in / 6.0)
    if lumi is not None:
        kwargs.setdefault("lumi", lumi)
    kwargs.setdefault("com", 13)
    kwargs.setdefault("loc", 0)
    return mplhep.cms.label(label, ax=target, data=data, **kwargs)
