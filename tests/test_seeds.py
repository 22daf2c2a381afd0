"Seeds: every file format, the two seed kinds, and bad seeds skipped with a counted reason (never a crash)."
import json
import pandas as pd
import pytest
from unicorn.seeds import read_seeds, domain_seeds, easyvqa_seeds, clean_seed, build_seeds, PRESETS
from unicorn.config import resolve_config

BAD = {"empty": b"", "whitespace": b"   \t  ", "bytes": b"a \xff\xfe\xfa circle", "huge": b"z" * 100_000}

def test_txt_bad_seeds_counted(tmp_path):
    p = tmp_path / "seeds.txt"
    p.write_bytes(b"\n".join([b"a red circle", BAD["empty"], BAD["whitespace"], BAD["bytes"], BAD["huge"], b"a blue square"]) + b"\n")
    recs, rep = read_seeds(p)
    assert [r["seed"] for r in recs] == ["a red circle", "a blue square"]
    assert dict(rep.skipped) == {"empty": 2, "not-utf8": 1, "too-long": 1}
    assert rep.kept == 2 and all(r["kind"] == "open" and r["domain"] == "open" for r in recs)
    assert len({r["id"] for r in recs}) == 2

def test_jsonl_csv_parquet(tmp_path):
    rows = ["a red circle", "", "   ", "x" * 100_000, "a green triangle"]
    (tmp_path / "s.jsonl").write_bytes(b"".join(json.dumps({"caption": r}).encode() + b"\n" for r in rows)
                                       + b'{"caption": "bad \xff"}\n{"other": 1}\n')
    recs, rep = read_seeds(tmp_path / "s.jsonl")
    assert [r["seed"] for r in recs] == ["a red circle", "a green triangle"]
    assert dict(rep.skipped) == {"empty": 2, "too-long": 1, "bad-json": 1, "no-caption-field": 1}
    pd.DataFrame({"caption": rows}).to_csv(tmp_path / "s.csv", index=False)
    recs, rep = read_seeds(tmp_path / "s.csv")
    assert [r["seed"] for r in recs] == ["a red circle", "a green triangle"] and rep.skipped["too-long"] == 1
    pd.DataFrame({"text": rows + [None]}).to_parquet(tmp_path / "s.parquet")
    recs, rep = read_seeds(tmp_path / "s.parquet", column="text", domain="birds")
    assert [r["seed"] for r in recs] == ["a red circle", "a green triangle"] and rep.skipped["missing"] == 1
    assert {r["domain"] for r in recs} == {"birds"}
    with pytest.raises(KeyError, match="no column 'caption'"):
        read_seeds(tmp_path / "s.parquet")

def test_csv_with_non_utf8_row(tmp_path):
    (tmp_path / "b.csv").write_bytes(b"caption\na red circle\nbad \xff bytes\n\na blue square\n")
    recs, rep = read_seeds(tmp_path / "b.csv")
    assert [r["seed"] for r in recs] == ["a red circle", "a blue square"]
    assert rep.skipped["not-utf8"] == 1

def test_domain_and_easyvqa_seeds():
    d = domain_seeds(["sparrow", "robin"], "bird", templates=("a photo of a {label}, a type of {domain}.", "a {label}"))
    assert len(d) == 4 and {r["domain"] for r in d} == {"bird"} and {r["kind"] for r in d} == {"domain"}
    assert d[0]["seed"] == "a photo of a sparrow, a type of bird." and d[0]["label"] == "sparrow"
    ev, counts = easyvqa_seeds(6)
    assert len(ev) == 6 and counts["unlabelled_skipped"] > 0
    assert all(r["source_image"].startswith("train-img") and r["seed"].startswith("a ") for r in ev)
    recs, rep = build_seeds(resolve_config(PRESETS, "mini", n_seeds=3, n_domain_labels=2))
    assert rep["open"] == 3 and rep["domain"] == 6 and all("domain" in r for r in recs)

def test_clean_seed_odd_types():
    assert clean_seed(float("nan")) == (None, "missing")
    assert clean_seed(12)[1].startswith("not-text")
    assert clean_seed("a\x00 red\x07 circle") == ("a red circle", None)
