"""Atomic writes and summary.json (wmnb.artefacts)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from wmnb.artefacts import atomic_dir, atomic_path, read_json, read_summary, write_json, write_summary


def test_atomic_path_commits_on_success_only(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("crash in the middle")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_atomic_dir_replaces_whole_directory(tmp_path):
    target = tmp_path / "skims"
    with atomic_dir(target) as d:
        (d / "a.txt").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(target) as d:
            (d / "b.txt").write_text("2")
            raise ValueError
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    with atomic_dir(target) as d:
        (d / "c.txt").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["skims"]


def test_summary_has_provenance_and_converts_numpy(tmp_path):
    write_summary(tmp_path, {"mw": np.float64(80360.1), "n": np.int64(3), "bad": float("nan")},
                  parameters={"profile": "smoke"}, inputs={"00_universe": "abc"})
    s = read_summary(tmp_path)
    assert s["headline"] == {"mw": 80360.1, "n": 3, "bad": None}
    assert s["parameters"] == {"profile": "smoke"} and s["inputs"] == {"00_universe": "abc"}
    assert s["schema_version"] == 1 and "numpy" in s["versions"] and s["written_at"]
    json.loads((tmp_path / "summary.json").read_text())  # strict JSON (no NaN)


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{truncated")
    with pytest.raises(ValueError, match="bad.json"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(TypeError, match="object"):
        write_json(tmp_path / "x.json", {"x": object()})
    assert not (tmp_path / "x.json").exists()
