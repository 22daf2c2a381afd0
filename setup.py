"Package setup read from settings.ini (nbdev 2 layout). Dependencies are pinned in requirements.txt and installed by `make setup`."
from configparser import ConfigParser
import setuptools

cfg = ConfigParser(delimiters=["="]); cfg.read("settings.ini")
cfg = cfg["DEFAULT"]
setuptools.setup(
    name=cfg["lib_name"], version=cfg["version"], description=cfg["description"],
    author=cfg["author"], author_email=cfg["author_email"], license=cfg["license"],
    packages=setuptools.find_packages(include=["unicorn", "unicorn.*"]), include_package_data=True,
    python_requires=">=" + cfg["min_python"], zip_safe=False,
    entry_points={"console_scripts": [s.strip() for s in cfg.get("console_scripts", "").split() if s.strip()],
                  "nbdev": [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
)
