"Every pipeline notebook runs end to end under papermill at the smoke scale, in one run folder."
import json
from pathlib import Path

from unicorn.pipeline import STEPS, repo_root, run_pipeline

def test_smoke_pipeline(tmp_path):
    run = run_pipeline("mini", tmp_path / "run", scale="smoke")
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["profile"] == "mini" and m["packages"]["torch"]
    for s in STEPS:
        assert m["stages"][f"notebook:{s.notebook}"]["status"] == "done", s.notebook
        assert (tmp_path / "run" / "notebooks" / s.notebook).exists()

def test_parameter_cells_parse(caplog):
    "papermill reads every pipeline notebook's parameters cell (one `=` per line, or it logs 'Unable to parse' and drops the line)."
    import nbformat
    from papermill.translators import PythonTranslator
    for s in STEPS:
        nb = nbformat.read(repo_root() / "nbs" / s.notebook, as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        caplog.clear()
        params = {p.name for p in PythonTranslator.inspect(cell)}
        assert not [r.message for r in caplog.records if "Unable to parse" in r.message], s.notebook
        assert {"profile", "run_dir"} <= params, (s.notebook, sorted(params))
        assigned = {l.split("=")[0].split(":")[0].strip() for l in cell.source.splitlines()
                    if "=" in l.split("#")[0] and not l.startswith(("#", " "))}
        assert assigned == params, (s.notebook, "papermill does not see", sorted(assigned - params))

def test_parameters_do_not_shadow_notebook_names():
    "No papermill parameter has the name of a function or class its notebook defines (papermill would overwrite it)."
    import ast, nbformat
    from papermill.translators import PythonTranslator
    for s in STEPS:
        nb = nbformat.read(repo_root() / "nbs" / s.notebook, as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        params = {p.name for p in PythonTranslator.inspect(cell)}
        defined = set()
        for c in nb.cells:
            if c.cell_type != "code" or c is cell: continue
            try: tree = ast.parse("\n".join(l for l in c.source.splitlines() if not l.lstrip().startswith(("%", "!"))))
            except SyntaxError: continue
            defined |= {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))}
        assert not params & defined, (s.notebook, sorted(params & defined))
