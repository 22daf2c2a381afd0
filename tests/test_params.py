"Typed parameters at the door (issue 26, item 1): papermill's strings are checked against each parameter's annotation."
import json, math, textwrap

import pytest
from hypothesis import given, settings, strategies as st

from unicorn.config import ParameterError, annotation_kinds, coerce_parameter, parameter_types
from unicorn.pipeline import check_parameters

PARAMS = textwrap.dedent("""\
    #| notest
    profile: str = "mini"                 # "mini" | "paper"
    n_seeds: int = 3                      # seeds
    force: bool = False                   # rerun
    conditions: list = ["none", "real"]   # conditions
    seed_file: Optional[str] = None       # a file
    n_domain_labels: Optional[int] = None # labels
    sft_lr: float = 2e-2                  # learning rate
    gap_target: Optional[Union[float, str]] = None  # a number or "native"
    legacy = 5                            # unannotated: its default's type
""")

def _run(**given):
    "Check `given` as papermill would inject it; the namespace after the check."
    ns = dict(given)
    cell = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in given.items())
    check_parameters(["", "import x", PARAMS, cell], ns=ns)
    return ns

@pytest.mark.parametrize("word, want", [("false", False), ("no", False), ("0", False), ("off", False),
                                        ("False", False), ("true", True), ("YES", True), ("1", True), (" on ", True),
                                        (0, False), (True, True)])
def test_force_words_are_bools_never_truthy_strings(word, want):
    assert _run(force=word)["force"] is want

@pytest.mark.parametrize("given, msg", [
    (dict(force="nope"), "parameter 'force' = 'nope' (str): expected bool"),
    (dict(force=2), "parameter 'force' = 2 (int): expected bool"),
    (dict(n_seeds="five"), "parameter 'n_seeds' = 'five' (str): expected int"),
    (dict(n_seeds=2.5), "parameter 'n_seeds' = 2.5 (float): expected int"),
    (dict(n_seeds=True), "parameter 'n_seeds' = True (bool): expected int"),
    (dict(n_seeds=None), "parameter 'n_seeds' = None (NoneType): expected int"),
    (dict(seed_file=5), "parameter 'seed_file' = 5 (int): expected Optional[str]"),
    (dict(n_domain_labels=1.5), "parameter 'n_domain_labels' = 1.5 (float): expected Optional[int]"),
    (dict(sft_lr="fast"), "parameter 'sft_lr' = 'fast' (str): expected float"),
    (dict(sft_lr="nan"), "parameter 'sft_lr' = 'nan' (str): expected float"),
    (dict(conditions="none"), "parameter 'conditions' = 'none' (str): expected list"),
    (dict(legacy="x"), "parameter 'legacy' = 'x' (str): expected int"),
    (dict(gap_target=[1]), "parameter 'gap_target' = [1] (list): expected Optional[Union[float, str]]"),
])
def test_wrong_types_are_refused_naming_parameter_value_and_type(given, msg):
    with pytest.raises(ParameterError) as e: _run(**given)
    assert msg in str(e.value)
    assert isinstance(e.value, ValueError)

def test_good_values_are_converted():
    ns = _run(n_seeds="4", sft_lr=1, conditions='["none", "blind"]', seed_file="None", n_domain_labels="2",
              gap_target="native", legacy=7.0)
    assert ns == {"n_seeds": 4, "sft_lr": 1.0, "conditions": ["none", "blind"], "seed_file": None, "n_domain_labels": 2,
                  "gap_target": "native", "legacy": 7}
    assert _run(gap_target="0.82")["gap_target"] == 0.82 and _run(conditions="['a']")["conditions"] == ["a"]

def test_without_a_namespace_the_injected_cell_is_checked():
    "Outside IPython (no kernel namespace) the values are read from the injected cell and still checked."
    with pytest.raises(ParameterError, match="'force' = 'maybe'"):
        check_parameters(["", PARAMS, "# Parameters\nforce = 'maybe'\n"])
    assert check_parameters(["", PARAMS, "# Parameters\nforce = 'no'\n"]) == ["force"]

def test_parameter_types_of_every_pipeline_notebook_are_understood():
    "Each declared parameter of the real notebooks has an annotation the checker reads (none is silently unchecked)."
    from unicorn.pipeline import repo_root
    seen = 0
    for nb in sorted((repo_root() / "nbs").glob("*.ipynb")):
        for c in json.loads(nb.read_text())["cells"]:
            if "parameters" in c.get("metadata", {}).get("tags", []):
                for name, ann in parameter_types("".join(c["source"])).items():
                    assert ann is not None and annotation_kinds(ann) is not None, (nb.name, name, ann)
                    seen += 1
    assert seen > 50

# --- fuzz: any value, any annotation the notebooks use ------------------------------------------------------------
ANNOTATIONS = ["bool", "int", "float", "str", "list", "Optional[int]", "Optional[str]", "Optional[float]",
               "Optional[bool]", "Optional[list]", "Optional[Union[float, str]]", "int | None"]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                   st.sampled_from(["false", "no", "0", "off", "true", "yes", "1", "on", "None", "2.5", "1e400",
                                    "[1, 2]", "{'a': 1}", "[" * 2000, "nan", "-3", " 7 ", "0x10", "1_000"]),
                   st.lists(st.integers(), max_size=3))

@settings(max_examples=1500, deadline=None, derandomize=True, database=None)
@given(VALUES, st.sampled_from(ANNOTATIONS))
def test_fuzz_coerce_parameter(value, ann):
    "Any value either becomes one of the annotation's types or gets a `ParameterError` naming it; never another error."
    try: got = coerce_parameter("p", value, ann)
    except ParameterError as e:
        assert str(e).startswith("parameter 'p' = ") and f"expected {ann}" in str(e)
        return
    kinds = annotation_kinds(ann)
    ok = {"bool": bool, "int": int, "float": float, "str": str, "list": list}
    assert (got is None and "None" in kinds) or any(type(got) is ok[k] for k in kinds if k != "None"), (value, ann, got)
    if type(got) is float: assert math.isfinite(got)
    if "bool" in kinds and type(got) is bool and isinstance(value, str):   # a word is read as its meaning
        assert got == (value.strip().lower() in ("true", "yes", "1", "on"))
    if kinds[0] == "int" and type(got) is int: assert not isinstance(value, bool) and float(got) == float(value)

# --- the real path: the papermill command line into a kernel ------------------------------------------------------

def _notebook(path):
    import nbformat
    spec = {"name": "python3", "display_name": "python3", "language": "python"}
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": spec})
    params = nbformat.v4.new_code_cell("run_dir: str = 'x'   # the run folder\nn_seeds: int = 3   # seeds\n"
                                       "force: bool = False   # rerun")
    params.metadata["tags"] = ["parameters"]
    check = nbformat.v4.new_code_cell("from unicorn.pipeline import check_parameters\ncheck_parameters(In)")
    nb.cells = [params, check,
                nbformat.v4.new_code_cell(textwrap.dedent("""\
                    from unicorn.runs import JsonlShards, RunFolder
                    run = RunFolder(run_dir)
                    with run.run_stage("s", params={"n": n_seeds}, force=force, clears=[run.path("s")]) as info:
                        if info is not None: JsonlShards(run.path("s")).write(0, [{"id": n_seeds}])
                    print(repr((force, n_seeds)))"""))]
    nbformat.write(nb, path)

def _papermill(tmp_path, *args):
    import subprocess, sys
    return subprocess.run([sys.executable, "-m", "papermill", str(tmp_path / "nb.ipynb"), str(tmp_path / "out.ipynb"),
                           "-p", "run_dir", str(tmp_path / "run"), *args], capture_output=True, text=True, timeout=300)

def test_papermill_force_false_keeps_a_finished_stage(tmp_path):
    "`papermill -p force false` (a string) reaches the notebook as False: the finished stage is kept, not rerun."
    import nbformat
    _notebook(tmp_path / "nb.ipynb")
    assert _papermill(tmp_path, "-p", "n_seeds", "4").returncode == 0
    shard = tmp_path / "run" / "s" / "part-00000.jsonl"
    stamp = shard.stat().st_mtime_ns
    p = _papermill(tmp_path, "-p", "n_seeds", "4", "-p", "force", "false")
    assert p.returncode == 0, p.stderr[-2000:]
    text = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[-1].outputs[-1]["text"]
    assert "stage 's' already done" in text and text.splitlines()[-1] == "(False, 4)"
    assert shard.stat().st_mtime_ns == stamp
    bad = _papermill(tmp_path, "-p", "n_seeds", "five")                         # refused before any work
    assert bad.returncode != 0 and "parameter 'n_seeds' = 'five' (str): expected int" in bad.stderr
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["s"]["params"] == {"n": 4}

# --- a config's fields are typed too (`validate_config`) -----------------------------------------------------------

def test_config_fields_are_type_checked():
    "A string where a bool, int or float belongs is refused naming `Class.field` (it used to skip bools: 'false' ran)."
    from unicorn.captions import PRESETS as CAPTIONS
    from unicorn.config import resolve_config
    from unicorn.instructions import PRESETS as INSTRUCTIONS
    with pytest.raises(ParameterError, match=r"InstructionsConfig\.constrained = 'false' \(str\): expected bool"):
        resolve_config(INSTRUCTIONS, "mini", constrained="false")
    with pytest.raises(ParameterError, match=r"CaptionsConfig\.n_seeds = '5' \(str\): expected int"):
        resolve_config(CAPTIONS, "mini", n_seeds="5")
    assert resolve_config(INSTRUCTIONS, "mini", constrained=False).constrained is False
