"Code that reads like the anchors (issue 12): small functions, and a comment for every parameter of the larger ones."
import ast, io, json, re, tokenize

import pytest

from unicorn.pipeline import repo_root

MODULES = sorted(p for p in (repo_root() / "unicorn").glob("*.py") if p.name != "_modidx.py")

def _functions(path):
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]

def _comment_lines(path) -> set[int]:
    toks = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return {t.start[0] for t in toks if t.type == tokenize.COMMENT}

@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_function_longer_than_30_lines(path):
    long = [(f.name, f.end_lineno - f.lineno + 1) for f in _functions(path) if f.end_lineno - f.lineno + 1 > 30]
    assert not long, f"{path.name}: split {long}"

@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_public_functions_with_more_than_3_parameters_have_docments(path):
    comments, missing = _comment_lines(path), []
    for f in _functions(path):
        args = [a for a in f.args.posonlyargs + f.args.args + f.args.kwonlyargs if a.arg not in ("self", "cls")]
        if f.name.startswith("_") or len(args) <= 3: continue
        missing += [f"{f.name}({a.arg})" for a in args if a.lineno not in comments]
    assert not missing, f"{path.name}: parameters without a comment: {missing}"

RUN_FOLDERS = ("seeds", "captions", "captions_raw", "captions_rejected", "instructions", "instructions_raw", "emb",
               "minicl", "synthetic", "synthetic_seed", "synthetic_label_train", "vlm", "eval", "studies", "synthvlm",
               "synth2", "notebooks")
# a run folder's sub-path spelled by hand: `run.path("emb", ...)` or `root / "captions"` (tests' own temp folders aside)
_SPELLED = re.compile(r"""\b(run|sub|root|_root|run_dir|self)(\.root)?(\.path\(\s*|\s*/\s*)["'](%s)["']""" % "|".join(RUN_FOLDERS))

def _code_lines():
    for nb in sorted((repo_root() / "nbs").glob("*.ipynb")):
        if nb.name == "01_runs.ipynb": continue                          # the layout itself
        for c in json.loads(nb.read_text())["cells"]:
            if c["cell_type"] == "code": yield from ((nb.name, l) for l in "".join(c["source"]).splitlines())
    for p in MODULES:
        if p.name != "runs.py": yield from ((p.name, l) for l in p.read_text().splitlines())

def test_no_run_folder_path_is_spelled_outside_the_layout():
    "Every path inside a run folder comes from `unicorn.runs.RunLayout` (issue 12)."
    bad = [(f, l.strip()) for f, l in _code_lines() if _SPELLED.search(l)]
    assert not bad, f"spell these with RunLayout: {bad[:10]}"

def test_the_layout_check_catches_a_spelled_path():
    assert _SPELLED.search('idx = EmbeddingIndex(run.path("emb", "image_train"))')
    assert _SPELLED.search('out = JsonlShards(root / "captions")')
    assert not _SPELLED.search('idx = EmbeddingIndex(run.embeddings("image_train"))')
