"Every pipeline notebook runs end to end under papermill at the smoke scale, in one run folder."
import json
from pathlib import Path

from unicorn.pipeline import STEPS, run_pipeline

def test_smoke_pipeline(tmp_path):
    run = run_pipeline("mini", tmp_path / "run", scale="smoke")
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["profile"] == "mini" and m["packages"]["torch"]
    for s in STEPS:
        assert m["stages"][f"notebook:{s.notebook}"]["status"] == "done", s.notebook
        assert (tmp_path / "run" / "notebooks" / s.notebook).exists()
