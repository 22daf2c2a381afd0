"Code that reads like the anchors (issue 12): small functions, and a comment for every parameter of the larger ones."
import ast, io, tokenize

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
