"""``wmnb fit MODEL [--json]``: fit a saved model (HDF5 from ModelBuilder, or the neutral .npz)."""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # imported lazily at run time: `wmnb fit --help` does not load TensorFlow
    from .model import Model
    from .result import FitResult


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="wmnb fit", description="Fit a saved binned likelihood model "
                                 "(HDF5 written by wmnb.fit.Model.save, or the neutral .npz of wmodel.py).")
    ap.add_argument("model", help="model file (.h5/.hdf5 or .npz)")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of the text summary")
    ap.add_argument("--poi", help="POI reported as 'poi' in the JSON line (default: the first POI)")
    ap.add_argument("--asimov", action="store_true", help="fit the expectation at the nominal parameters")
    ap.add_argument("--no-impacts", action="store_true", help="skip nominal impacts")
    ap.add_argument("--no-global-impacts", action="store_true", help="skip global impacts")
    ap.add_argument("--blind", action="append", default=[], metavar="POI:SEED",
                    help="blind a POI with a hidden offset derived from SEED (repeatable)")
    ap.add_argument("--bb-scale", type=float, default=None,
                    help="Barlow-Beeston-lite scale (overrides the model's; .npz default 1.0)")
    ap.add_argument("--signal-strength", action="store_true",
                    help=".npz only: add a free normalisation r_W of the signal process (as rabbit-fit does)")
    ap.add_argument("--out", help="also write the full result (to_dict) to this JSON file")
    return ap


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN and infinities replaced by ``None`` (JSON has neither: Python's ``NaN`` /
    ``Infinity`` tokens break strict parsers) and numpy scalars and arrays made plain."""
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _read_model(a: argparse.Namespace) -> Model:
    """The validated model named on the command line (raises on bad input)."""
    from .model import Model

    if a.signal_strength and a.model.endswith(".npz"):
        return Model.from_npz(a.model, signal_strength=True)
    return Model.read(a.model)


def _parse_blind(items: Sequence[str]) -> dict[str, int]:
    """``POI:SEED`` options -> {poi: seed}; ``ValueError`` for a malformed one."""
    blind: dict[str, int] = {}
    for item in items:
        name, _, seed = item.partition(":")
        if not seed.lstrip("-").isdigit():
            raise ValueError(f"--blind expects POI:SEED with an integer seed, got {item!r}")
        blind[name] = int(seed)
    return blind


def _json_line(res: FitResult, model: Model, poi: str | None, wall: float) -> str:
    """The one-line JSON summary of ``--json`` (strict JSON: non-finite numbers are null)."""
    ok = poi if poi and res.converged else None  # the POI to report, if there is one and the fit converged
    line: dict[str, Any] = {
        "poi_name": poi, "poi": res.value(ok) if ok else None, "poi_err": res.error(ok) if ok else None,
        "edm": res.edm, "nparams": model.nparams, "nbins": model.nbins, "wall_s": wall,
        "converged": res.converged, "niter": res.niter, "nll": res.nll, "timing": res.timing,
        "blinded": res.blinded}
    if ok and res.nominal:
        line["impacts_nominal"] = res.impacts_nominal(ok)
    if ok and res.global_:
        line["impacts_global"] = res.impacts_global(ok)
    return json.dumps(json_safe(line), allow_nan=False)


def cli_fit(argv: list[str]) -> int:
    """Entry point of ``wmnb fit``; returns the exit code (0 ok, 1 fit failed, 2 bad input)."""
    a = _parser().parse_args(argv)
    t0 = time.perf_counter()
    from concurrent.futures import ThreadPoolExecutor

    # the model is read while TensorFlow is imported: decompressing it releases the GIL, and at
    # the paper's size that saves 0.8 s of the command's ~7
    with ThreadPoolExecutor(max_workers=1) as pool:
        reading = pool.submit(_read_model, a)
        from .fitter import fit
    try:
        model = reading.result()
    except (FileNotFoundError, ValueError, OSError, KeyError) as err:  # ModelError is a ValueError
        msg = str(err) if a.model in str(err) else f"{a.model}: {err}"
        print(f"wmnb fit: cannot read model: {msg}", file=sys.stderr)
        return 2
    try:
        blind = _parse_blind(a.blind)
    except ValueError as err:
        print(f"wmnb fit: {err}", file=sys.stderr)
        return 2
    if a.bb_scale is not None:
        if not (math.isfinite(a.bb_scale) and a.bb_scale >= 0):
            print(f"wmnb fit: --bb-scale must be finite and >= 0, got {a.bb_scale}", file=sys.stderr)
            return 2
        model.bb_scale = float(a.bb_scale)
    pois = model.pois
    poi = a.poi or (pois[0] if pois else None)
    if poi is not None and poi not in pois:
        print(f"wmnb fit: --poi {poi!r} is not a POI of the model (POIs: {pois})", file=sys.stderr)
        return 2
    try:
        res = fit(model, asimov=a.asimov, blind=blind, impacts=not a.no_impacts,
                  global_impacts=not a.no_global_impacts)
    except KeyError as err:
        print(f"wmnb fit: {err}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - t0
    if a.out:
        from ..artefacts import write_json

        write_json(a.out, json_safe({**res.to_dict(), "wall_s": wall}))
    if a.json:
        print(_json_line(res, model, poi, wall))
    else:
        print(res.summary() if res.converged else f"fit did not converge: {res.message}")
        print(f"wall time {wall:.2f} s")
    return 0 if res.converged else 1
