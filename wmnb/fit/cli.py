"""``wmnb fit MODEL [--json]``: fit a saved model (HDF5 from ModelBuilder, or the neutral .npz)."""
from __future__ import annotations

import argparse
import json
import sys
import time


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


def cli_fit(argv: list[str]) -> int:
    """Entry point of ``wmnb fit``; returns the exit code (0 ok, 1 fit failed, 2 bad input)."""
    a = _parser().parse_args(argv)
    t0 = time.perf_counter()
    from .fitter import fit
    from .model import Model

    try:
        model = (Model.from_npz(a.model, signal_strength=True) if a.signal_strength and a.model.endswith(".npz")
                 else Model.read(a.model))
    except (FileNotFoundError, ValueError, OSError, KeyError) as err:
        print(f"wmnb fit: cannot read model {a.model}: {err}", file=sys.stderr)
        return 2
    if a.bb_scale is not None:
        model.bb_scale = float(a.bb_scale)
    blind = {}
    for item in a.blind:
        name, _, seed = item.partition(":")
        if not seed.lstrip("-").isdigit():
            print(f"wmnb fit: --blind expects POI:SEED with an integer seed, got {item!r}", file=sys.stderr)
            return 2
        blind[name] = int(seed)
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

        write_json(a.out, {**res.to_dict(), "wall_s": wall})
    if a.json:
        line = {"poi_name": poi, "poi": res.value(poi) if (poi and res.converged) else None,
                "poi_err": res.error(poi) if (poi and res.converged) else None,
                "edm": res.edm, "nparams": model.nparams, "nbins": model.nbins, "wall_s": wall,
                "converged": res.converged, "niter": res.niter, "nll": res.nll, "timing": res.timing,
                "blinded": res.blinded}
        if poi and res.converged and res.nominal:
            line["impacts_nominal"] = res.impacts_nominal(poi)
        if poi and res.converged and res.global_:
            line["impacts_global"] = res.impacts_global(poi)
        print(json.dumps(line))
    else:
        print(res.summary() if res.converged else f"fit did not converge: {res.message}")
        print(f"wall time {wall:.2f} s")
    return 0 if res.converged else 1
