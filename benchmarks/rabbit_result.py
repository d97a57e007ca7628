"""Print one JSON line with the POI, its error and the grouped impacts of a rabbit-fit result.

Runs inside the separate rabbit-fit benchmark environment (never imported by wmnb):
    /tmp/rabbitenv/bin/python benchmarks/rabbit_result.py OUTDIR/fitresults.hdf5 POI
"""
import json
import sys

import numpy as np
from rabbit import io_tools


def main(path: str, poi: str) -> None:
    fr = io_tools.get_fitresult(path)
    parms = fr["parms"].get()
    labels = list(parms.axes["parms"])
    i = labels.index(poi)
    out = {"poi": float(parms.values()[i]), "poi_err": float(np.sqrt(parms.variances()[i])),
           "edm": float(fr["edmval"])}
    for key, name in (("impacts_grouped", "impacts_nominal"), ("global_impacts_grouped", "impacts_global")):
        if key in fr:
            vals, labs = io_tools.read_impacts_poi(fr, poi, grouped=True,
                                                   impact_type="traditional" if key == "impacts_grouped" else "global")
            out[name] = {str(k): float(v) for k, v in zip(labs, vals)}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
