"Code that reads like the anchors (issues 12, 25): small functions, a comment for every parameter of the larger ones."
import ast, io, json, re, tokenize

import pytest

from unicorn.pipeline import repo_root

MODULES = sorted(p for p in (repo_root() / "unicorn").glob("*.py") if p.name != "_modidx.py")
MAX_STATEMENTS, MAX_LINE = 40, 120

def _functions(src: str):
    return [n for n in ast.walk(ast.parse(src)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]

def _comment_lines(src: str) -> set[int]:
    toks = tokenize.generate_tokens(io.StringIO(src).readline)
    return {t.start[0] for t in toks if t.type == tokenize.COMMENT}

def _statements(node) -> int:
    "Statements inside `node`, at any depth; a nested function counts as one (its body is counted on its own)."
    n = 0
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.stmt): n += 1
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)): n += _statements(child)
    return n

def body_statements(f) -> int:
    "Statements in function `f`'s body (recursively), its docstring aside; signature lines and comments do not count."
    doc = f.body and isinstance(f.body[0], ast.Expr) and isinstance(f.body[0].value, ast.Constant) \
        and isinstance(f.body[0].value.value, str)
    return _statements(f) - bool(doc)

def long_functions(src: str) -> list:
    return [(f.name, n) for f in _functions(src) if (n := body_statements(f)) > MAX_STATEMENTS]

def _generated_rows(src: str) -> set[int]:
    "Rows nbdev writes itself: the `__all__` list (pretty-printed 160 wide)."
    rows = set()
    for n in ast.parse(src).body:
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets):
            rows |= set(range(n.lineno, n.end_lineno + 1))
    return rows

def long_lines(src: str) -> list[int]:
    skip = _generated_rows(src)
    return [i for i, l in enumerate(src.splitlines(), 1) if len(l) > MAX_LINE and i not in skip]

def semicolon_lines(src: str) -> list[int]:
    "Rows where `;` joins statements: an OP token `;` outside brackets."
    depth, rows = 0, []
    for t in tokenize.generate_tokens(io.StringIO(src).readline):
        if t.type != tokenize.OP: continue
        if t.string in "([{": depth += 1
        elif t.string in ")]}": depth -= 1
        elif t.string == ";" and depth == 0: rows.append(t.start[0])
    return sorted(set(rows))

def missing_docments(src: str) -> list[str]:
    comments, missing = _comment_lines(src), []
    for f in _functions(src):
        args = [a for a in f.args.posonlyargs + f.args.args + f.args.kwonlyargs if a.arg not in ("self", "cls")]
        if f.name.startswith("_") or len(args) <= 3: continue
        missing += [f"{f.name}({a.arg})" for a in args if a.lineno not in comments]
    return missing

@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_function_has_more_than_40_statements(path):
    long = long_functions(path.read_text())
    assert not long, f"{path.name}: split {long} (body statements, limit {MAX_STATEMENTS})"

@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_line_longer_than_120_characters(path):
    rows = long_lines(path.read_text())
    assert not rows, f"{path.name}: lines over {MAX_LINE} characters: {rows}"

@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_semicolon_joined_statements(path):
    rows = semicolon_lines(path.read_text())
    assert not rows, f"{path.name}: `;` joins statements on lines {rows}"

@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_public_functions_with_more_than_3_parameters_have_docments(path):
    missing = missing_docments(path.read_text())
    assert not missing, f"{path.name}: parameters without a comment: {missing}"

def test_the_statement_count_catches_a_long_function():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_STATEMENTS))
    ok = 'def f(a,  # a\n      b):\n    "Doc."\n    # a comment\n' + body
    assert long_functions(ok) == []                                   # docstring, signature and comments are free
    assert long_functions(ok + "    if x0:\n        return 1\n") == [("f", MAX_STATEMENTS + 2)]
    nested = "def g():\n    def h():\n" + body.replace("    ", "        ") + "    return h\n"
    assert long_functions(nested) == []                               # h's body is h's, not g's
    assert long_functions(nested.replace("return h", "return h\n    y = 1\n    z = 2")) == []
    assert long_functions(nested.replace("x0 = 0", "x0 = 0\n        y = 1")) == [("h", MAX_STATEMENTS + 1)]

def test_the_line_check_catches_a_long_line():
    assert long_lines("x = 1\n" + "y = '" + "a" * 120 + "'\n") == [2]
    assert long_lines("__all__ = ['" + "a" * 150 + "']\nx = 1\n") == []   # nbdev writes `__all__` itself
    assert long_lines("x = '" + "a" * 114 + "'\n") == []

def test_the_semicolon_check_catches_joined_statements():
    assert semicolon_lines("a = 1; b = 2\nif a: b; a\n") == [1, 2]
    assert semicolon_lines("s = 'a; b'  # c; d\nx = f(a[1:2])\n") == []   # in strings and comments it is text

def test_the_docments_check_catches_a_bare_parameter():
    assert missing_docments("def f(a, b, c, d): pass\n") == ["f(a)", "f(b)", "f(c)", "f(d)"]
    assert missing_docments("def f(a,  # a\n      b,  # b\n      c,  # c\n      d):  # d\n    pass\n") == []
    assert missing_docments("def _f(a, b, c, d): pass\n") == []

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
