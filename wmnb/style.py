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

    label = kwargs.pop("label", LABEL)
    if lumi is not None:
        kwargs.setdefault("lumi", lumi)
    kwargs.setdefault("com", 13)
    kwargs.setdefault("loc", 0)
    return mplhep.cms.label(label, ax=ax, data=data, **kwargs)
