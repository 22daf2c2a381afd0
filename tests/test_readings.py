"""Issue 25: every number a study notebook's "What this shows" reading states appears in a table the notebook prints
above it (as printed: 3 decimals, sign included), read from the committed outputs."""
import json
import re

import pytest

from unicorn.pipeline import repo_root

NUMBER = re.compile(r"(?<![\w.])[-+−]?\d+\.\d+(?!\d)")   # decimals: counts (seeds) and levels (95 %) are no table cells
HEADING = "what this shows"
PREDATES = ("committed outputs predate the generated reading (code changed, notebook not re-run): "
            "regenerate with make reproduce")
STUDIES = {
    "50_study_gap_geometry": None,
    "51_study_domain_gap": None,
    "52_study_shift_ablation": None,
    "53_study_sparse_dense": PREDATES,
    "54_study_gap_size": None,
}


def _outputs(cell: dict) -> str:
    "Every text a code cell printed or displayed (stream, text/plain, text/html, text/markdown)."
    out = []
    for o in cell.get("outputs", []):
        if "text" in o: out.append("".join(o["text"]))
        data = o.get("data", {})
        out += ["".join(data[k]) for k in ("text/plain", "text/html", "text/markdown") if k in data]
    return "\n".join(out)


def split_reading(nb: dict) -> tuple[str, str, str]:
    """`(printed reading, its markdown prose, everything else printed)`: the reading is what the code cells under the
    'What this shows' heading print (up to the next heading); the tables are the outputs of every other cell."""
    reading, prose, tables, inside = [], [], [], False
    for c in nb["cells"]:
        src = "".join(c["source"])
        if c["cell_type"] == "markdown" and src.lstrip().startswith("#"):
            inside = HEADING in src.splitlines()[0].lower()
            src = "\n".join(src.splitlines()[1:])
        if c["cell_type"] == "markdown": (prose if inside else []).append(src)
        else: (reading if inside else tables).append(_outputs(c))
    return "\n".join(reading), "\n".join(prose), "\n".join(tables)


def _value(s: str) -> float:
    "A printed number's value (a typographic minus reads as '-')."
    return round(float(s.replace("−", "-")), 9)


def missing_numbers(reading: str, tables: str) -> list[str]:
    "The numbers of `reading` that no table prints (compared by value, so 0.980 matches a table's 0.98)."
    have = {_value(m) for m in NUMBER.findall(tables)}
    return [m for m in NUMBER.findall(reading) if _value(m) not in have]


def test_missing_numbers_finds_a_number_no_table_prints():
    "The checker itself: a reading number absent from the tables is reported, one present (any sign form) is not."
    assert missing_numbers("gap 0.879 -> 0.054 (−0.153)", "0.879 0.0540 -0.153") == []
    assert missing_numbers("paired cosine 0.554 -> 0.930", "0.554 0.93") == []
    assert missing_numbers("lower by 0.153 over 5 seeds, 95 %", "-0.153") == ["0.153"]
    printed = lambda text: {"cell_type": "code", "source": ["x"], "outputs": [{"output_type": "stream",
                                                                                 "text": [text]}]}
    heading = {"cell_type": "markdown", "source": ["## What this shows\n", "It rose to 0.95."]}
    nb = {"cells": [printed("acc 0.912"), heading, printed("acc 0.912"), {"cell_type": "markdown", "source": ["## Next"]},
                    printed("0.95")]}
    reading, prose, tables = split_reading(nb)
    assert (reading, prose.strip()) == ("acc 0.912", "It rose to 0.95.") and tables == "acc 0.912\n0.95"
    assert missing_numbers(prose, split_reading({"cells": nb["cells"][:3]})[2]) == ["0.95"]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=why)) if why else n
                                  for n, why in STUDIES.items()])
def test_reading_numbers_appear_in_tables(name):
    "The committed notebook prints a reading, and every number in it (and in its prose) is printed in a table above."
    nb = json.loads((repo_root() / "nbs" / f"{name}.ipynb").read_text())
    reading, prose, tables = split_reading(nb)
    assert reading.strip(), f"{name}: nothing printed under a 'What this shows' heading"
    missing = missing_numbers(reading + "\n" + prose, tables)
    assert not missing, f"{name}: the reading states {missing}, which no table of the notebook prints"


NO_FIGURE = "committed outputs predate the inline backend (papermill kernels drew with Agg): regenerate with make reproduce"
FIGURES = {"50_study_gap_geometry": None, "51_study_domain_gap": None, "52_study_shift_ablation": None,
           "53_study_sparse_dense": NO_FIGURE, "54_study_gap_size": None}


def png_outputs(nb: dict) -> int:
    "How many `image/png` outputs the notebook's code cells hold."
    return sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))


def test_png_outputs_counts_figures():
    "The counter itself: a displayed figure counts, a printed line or an HTML table does not."
    fig = {"output_type": "display_data", "data": {"image/png": "iVBO", "text/plain": "<Figure>"}}
    txt = {"output_type": "stream", "text": "acc 0.9"}
    html = {"output_type": "execute_result", "data": {"text/html": "<table/>"}}
    nb = {"cells": [{"cell_type": "code", "outputs": [txt, fig]}, {"cell_type": "code", "outputs": [html]},
                    {"cell_type": "markdown", "source": []}]}
    assert png_outputs(nb) == 1 and png_outputs({"cells": nb["cells"][1:]}) == 0


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=why)) if why else n
                                  for n, why in FIGURES.items()])
def test_study_notebook_keeps_its_figure(name):
    "The committed study notebook shows at least one figure without running (issue 25: figures kept as outputs)."
    nb = json.loads((repo_root() / "nbs" / f"{name}.ipynb").read_text())
    assert png_outputs(nb) >= 1, f"{name}: no image/png output committed; its figures show only after running it"
