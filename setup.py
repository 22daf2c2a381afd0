"""Package setup read from settings.ini (nbdev 2 layout). `requirements` are the runtime dependencies (pinned; `pip install -e .`
after torch is a working package); `<name>_requirements` are the extras (`pip install -e ".[scale]"`). The whole environment
is pinned in constraints.txt (`make lock`), which `make setup` and environment.yml install with."""
import shlex
from configparser import ConfigParser
from pathlib import Path
import setuptools

cfg = ConfigParser(delimiters=["="]); cfg.read(Path(__file__).resolve().parent / "settings.ini")
cfg = cfg["DEFAULT"]
reqs = lambda key: shlex.split(cfg.get(key, ""))
EXTRAS = ("dev", "scale", "vllm")   # each one's packages: `<name>_requirements` in settings.ini
setuptools.setup(
    name=cfg["lib_name"], version=cfg["version"], description=cfg["description"],
    author=cfg["author"], author_email=cfg["author_email"], license={"apache2": "Apache-2.0"}.get(cfg["license"], cfg["license"]),
    packages=setuptools.find_packages(include=["unicorn", "unicorn.*"]), include_package_data=True,
    python_requires=">=" + cfg["min_python"], zip_safe=False,
    install_requires=reqs("requirements"),
    # `pip install -e .[lmms]`: what lmms-eval 0.7.3's evaluator and CLI import at run time. lmms-eval itself is
    # installed `--no-deps` (Makefile): its declared requirements add wandb, yt-dlp, opencv, av, ruff, pre-commit, ...
    # that the evaluator does not import. None of these pulls a torch (checked with `pip install --dry-run`).
    extras_require={name: reqs(f"{name}_requirements") for name in EXTRAS}
                   | {"lmms": ["loguru==0.7.3", "sacrebleu==2.6.0", "pytablewriter==1.2.1"]},
    entry_points={"console_scripts": [s.strip() for s in cfg.get("console_scripts", "").split() if s.strip()],
                  "nbdev": [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"],
                  # lmms-eval >= 0.7 resolves `--model unicorn_vlm` through this group (ModelRegistryV2, 35_lmms)
                  "lmms_eval.models": ["unicorn_vlm = unicorn.lmms:lmms_manifest"]},
)
