"Every pipeline notebook runs end to end under papermill at the smoke scale, in one run folder."
import json
from pathlib import Path

import numpy as np
import pandas as pd

from unicorn.pipeline import STEPS, repo_root, run_pipeline


def check_transfers(root: Path) -> None:
    """Every synthetic store holds the captions' ids with finite rows and its method's defining property: u − μ_T
    averages to zero; ReAlign's and C3's rows are unit vectors, ReAlign's centred on the image pool's direction."""
    from unicorn.runs import EmbeddingShards, RunFolder
    from unicorn.transfer import TRANSFER_METHODS, l2norm, load_stats
    run = RunFolder(root, profile="mini")
    text, mu_i = EmbeddingShards(run.embeddings("text")).load_all(), load_stats(run.emb_stats)["mu_image_train"]
    for m in TRANSFER_METHODS:
        e = EmbeddingShards(run.synthetic(m)).load_all()
        x = e.emb.astype(np.float64)
        assert list(e.ids) == list(text.ids) and np.isfinite(x).all(), m
        if m == "unicorn_code": assert np.abs(x.mean(0)).max() < 5e-3
        if m in ("realign", "c3_spec"): np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=2e-3)
        if m == "realign": assert l2norm(x.mean(0)) @ l2norm(mu_i) > 0.9


def check_study_results(root: Path) -> None:
    """52's per-question results: every condition and centring answered the same questions, 0/1 each; the blind model
    (no image) answers identically raw and centred; 51's comparisons carry one of the four verdicts."""
    from unicorn.runs import RunFolder
    run = RunFolder(root, profile="mini")
    res = pd.read_csv(run.study("shift_ablation", "per_question.csv"))
    assert set(res.correct) <= {0, 1} and {"real", "blind"} <= set(res.method)
    qids = {k: tuple(sorted(g.qid)) for k, g in res.groupby(["method", "seed", "centring"])}
    assert len(set(qids.values())) == 1 and len(qids) >= 2 * res.method.nunique()
    blind = res[res.method == "blind"].pivot_table(index="qid", columns="centring", values="correct")
    assert (blind["raw"] == blind["centred"]).all()
    diffs = pd.read_csv(run.study("domain_gap", "differences.csv"))
    assert len(diffs) and set(diffs.verdict) <= {"higher", "lower", "equivalent", "undecided"}


def test_smoke_pipeline(tmp_path):
    "Every step runs at the smoke scale, and what the transfer stage and the studies wrote holds its invariants."
    run = run_pipeline("mini", tmp_path / "run", scale="smoke")
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["profile"] == "mini" and m["packages"]["torch"]
    for s in STEPS:
        assert m["stages"][f"notebook:{s.notebook}"]["status"] == "done", s.notebook
        assert (tmp_path / "run" / "notebooks" / s.notebook).exists()
    check_transfers(tmp_path / "run")        # 3 sft steps are too few for real > blind: invariants a defect breaks
    check_study_results(tmp_path / "run")

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

def test_parameters_typed_and_commented():
    "`papermill --help-notebook` shows a type and a comment for every parameter of every pipeline notebook."
    from papermill import inspect_notebook
    for s in STEPS:
        for name, p in inspect_notebook(str(repo_root() / "nbs" / s.notebook)).items():
            assert p["inferred_type_name"] not in ("None", ""), (s.notebook, name, "has no type")
            assert p["help"].strip(), (s.notebook, name, "has no comment")

def test_every_notebook_names_its_kernel():
    "Lab opens any notebook without a 'Select Kernel' dialog, and papermill runs it without `-k`."
    import nbformat
    for p in sorted((repo_root() / "nbs").glob("*.ipynb")):
        assert nbformat.read(p, as_version=4).metadata.get("kernelspec", {}).get("name") == "python3", p.name

def test_parameters_checked_right_after_the_parameters_cell():
    "Every pipeline notebook calls check_parameters(In) in the cell after its parameters cell (where papermill injects)."
    import nbformat
    for s in STEPS:
        cells = nbformat.read(repo_root() / "nbs" / s.notebook, as_version=4).cells
        i = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
        assert "check_parameters(In)" in cells[i + 1].source, s.notebook

def test_unknown_parameter_fails_the_run(tmp_path):
    "A misspelt papermill parameter stops the notebook with a message naming it; a declared one runs."
    import nbformat, papermill as pm, pytest
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "python3", "language": "python"}})
    params = nbformat.v4.new_code_cell("n_seeds: int = 3   # seeds"); params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("from unicorn.pipeline import check_parameters\ncheck_parameters(In)"),
                nbformat.v4.new_code_cell("print(n_seeds)")]
    nbformat.write(nb, tmp_path / "nb.ipynb")
    out = pm.execute_notebook(str(tmp_path / "nb.ipynb"), str(tmp_path / "ok.ipynb"), parameters={"n_seeds": 5}, progress_bar=False)
    assert out.cells[-1].outputs[0]["text"] == "5\n"
    with pytest.raises(pm.PapermillExecutionError, match=r"unknown parameter\(s\) \['n_seed'\]"):
        pm.execute_notebook(str(tmp_path / "nb.ipynb"), str(tmp_path / "bad.ipynb"), parameters={"n_seed": 5}, progress_bar=False)

def test_index_says_what_the_readme_says():
    "The front page (nbs/index.ipynb) and README.md say the same things (`make index` writes one from the other)."
    import nbformat
    from unicorn.pipeline import index_text
    nb = nbformat.read(repo_root() / "nbs" / "index.ipynb", as_version=4)
    shown = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert shown == index_text((repo_root() / "README.md").read_text()), "run `make index` after editing README.md"
