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

# --- issue 13: every line is kept or counted with its line number; a seed is always its own cell ---
import csv, io, tempfile
from pathlib import Path
from hypothesis import given, settings, strategies as st, HealthCheck

def _lines_of(recs, rep):
    "Line number of every kept seed and every skipped line, in file order."
    return sorted([int(r["id"].rsplit("-", 1)[1]) for r in recs] + [w for w, _ in rep.lines])

def test_csv_extra_field_in_first_row_never_shifts_columns(tmp_path):
    (tmp_path / "s.csv").write_text("caption,source\na red circle,x,EXTRA\na blue square,y\na green triangle,z\n")
    recs, rep = read_seeds(tmp_path / "s.csv")
    assert [(r["id"], r["seed"]) for r in recs] == [("s-3", "a blue square"), ("s-4", "a green triangle")]
    assert rep.lines == [(2, "wrong-field-count")] and rep.as_dict()["skipped_lines"] == [[2, "wrong-field-count"]]

def test_csv_ragged_quotes_huge_and_blank_lines_counted(tmp_path):
    (tmp_path / "s.csv").write_text('caption,n\na red circle,1\nshort\n"a blue\nsquare",2\n"never closed,3\n'
                                    'a green triangle,4\n' + "z" * 140_000 + ',5\n\n"bad"quote,6\nlast,7\n')
    recs, rep = read_seeds(tmp_path / "s.csv")
    assert [(r["id"], r["seed"]) for r in recs] == [("s-2", "a red circle"), ("s-4", "a blue square"),
                                                    ("s-7", "a green triangle"), ("s-11", "last")]
    assert rep.lines == [(3, "wrong-field-count"), (6, "bad-quote"), (8, "too-long"), (9, "empty"), (10, "bad-quote")]
    assert _lines_of(recs, rep) == [2, 3, 4, 6, 7, 8, 9, 10, 11]      # line 5 is the second line of record 4

def test_csv_stray_quotes_cost_linear_time(tmp_path):
    "Every line opens a quote that never closes: each is counted, and resuming after each stays linear (was quadratic)."
    import time
    (tmp_path / "q.csv").write_text("caption,x\n" + 'aa","\n' * 20_000 + "last,1\n")
    t0 = time.monotonic(); recs, rep = read_seeds(tmp_path / "q.csv")
    assert time.monotonic() - t0 < 10 and [r["seed"] for r in recs] == ["last"]
    assert rep.skipped == {"unterminated-quote": 20_000} and _lines_of(recs, rep) == list(range(2, 20_003))

def test_csv_bad_header_and_missing_column(tmp_path):
    (tmp_path / "h.csv").write_text('"caption\na\n')
    with pytest.raises(ValueError, match="header"): read_seeds(tmp_path / "h.csv")
    (tmp_path / "m.csv").write_text("text\na\n")
    with pytest.raises(KeyError, match="no column 'caption'"): read_seeds(tmp_path / "m.csv")

def test_jsonl_deep_nesting_huge_numbers_and_blank_lines_counted(tmp_path):
    (tmp_path / "s.jsonl").write_text('{"caption": "a dog"}\n' + "[" * 5000 + '\n{"caption": ' + "1" * 5000 + '}\n\n'
                                      '{"caption": 3}\n["a list"]\n{"caption": "a cat"}\n')
    recs, rep = read_seeds(tmp_path / "s.jsonl")
    assert [(r["id"], r["seed"]) for r in recs] == [("s-1", "a dog"), ("s-7", "a cat")]
    assert [(w, why) for w, why in rep.lines] == [(2, "bad-json"), (3, "bad-json"), (4, "empty"), (5, "not-text (int)"),
                                                  (6, "bad-json")]

# Property tests (hypothesis): files are written to one scratch folder; each example overwrites its file.
_SCRATCH = Path(tempfile.mkdtemp(prefix="seed-fuzz-"))
_CHARS = st.characters(blacklist_categories=("Cs",))                  # anything UTF-8 can hold
_CELL = st.text(st.one_of(st.sampled_from(list(',"\n\r \t\x00\ufffd') + ["a", "é", "🦄", "\u200b"]), _CHARS), max_size=12)

@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ncols=st.integers(1, 4), k=st.integers(0, 3), data=st.data())
def test_csv_property_every_record_kept_as_its_cell_or_counted(ncols, k, data):
    "Any rows a CSV writer produces (quotes, newlines, unicode, ragged lengths): exact seeds, exact line numbers."
    k = k % ncols
    rows = data.draw(st.lists(st.one_of(st.lists(_CELL, min_size=ncols, max_size=ncols),
                                        st.lists(_CELL, max_size=ncols + 2)), max_size=8))
    def line(r): b = io.StringIO(); csv.writer(b).writerow(r); return b.getvalue()
    header = [f"c{i}" for i in range(ncols)]
    text, starts, n = line(header), [], 1
    for r in rows:
        starts.append(n + 1); chunk = line(r); text += chunk; n += len(io.StringIO(chunk, newline="").readlines())
    p = _SCRATCH / "p.csv"; p.write_text(text, encoding="utf-8", newline="")
    recs, rep = read_seeds(p, column=f"c{k}")
    want_kept, want_skip = [], []
    for at, r in zip(starts, rows):
        if not r: want_skip.append((at, "empty"))
        elif len(r) != ncols: want_skip.append((at, "wrong-field-count"))
        else:
            s, why = clean_seed(r[k])
            if why: want_skip.append((at, why))
            else: want_kept.append((f"p-{at}", s))
    assert [(r["id"], r["seed"]) for r in recs] == want_kept
    assert rep.lines == want_skip and rep.kept == len(want_kept)

@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(st.sampled_from(list('ab ,"é🦄\x00\t')), max_size=10), max_size=12))
def test_csv_property_raw_lines_never_vanish(lines):
    "Hand-made (often malformed) CSV lines: no crash; each record counted once; without quotes, one record per line."
    p = _SCRATCH / "r.csv"; p.write_text("caption,x\n" + "".join(l + "\n" for l in lines), encoding="utf-8", newline="")
    recs, rep = read_seeds(p)
    seen = _lines_of(recs, rep)
    assert len(seen) == len(set(seen)) and all(2 <= w <= len(lines) + 1 for w in seen)
    if not any('"' in l for l in lines):
        assert seen == list(range(2, len(lines) + 2))
        for r in recs:
            cells = lines[int(r["id"].rsplit("-", 1)[1]) - 2].split(",")
            assert len(cells) == 2 and r["seed"] == clean_seed(cells[0])[0]

@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")), max_size=12), st.booleans())
def test_txt_property_every_line_kept_or_counted(lines, trailing_newline):
    p = _SCRATCH / "t.txt"; p.write_bytes(b"\n".join(lines) + (b"\n" if trailing_newline and lines else b""))
    recs, rep = read_seeds(p)
    data = p.read_bytes()
    n = data.count(b"\n") + (not data.endswith(b"\n")) if data else 0       # lines, the last one maybe unterminated
    assert _lines_of(recs, rep) == list(range(1, n + 1))
    for r in recs:
        assert r["seed"] == clean_seed(lines[int(r["id"].rsplit("-", 1)[1]) - 1].rstrip(b"\r"))[0]

_JSON_LINE = st.one_of(
    st.builds(lambda v: json.dumps({"caption": v}), st.one_of(st.text(_CHARS, max_size=8), st.integers(), st.none())),
    st.builds(json.dumps, st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
    st.text(st.sampled_from(list('{}[]":, a1\\é')), max_size=10),                     # mostly not JSON
    st.sampled_from(["[" * 3000, " ", '{"caption": "\\ud800 a"}', '{"caption": 1' + "0" * 5000 + "}"]))

@settings(max_examples=400, deadline=None)
@given(st.lists(_JSON_LINE, max_size=10))
def test_jsonl_property_every_line_kept_or_counted(lines):
    p = _SCRATCH / "j.jsonl"; p.write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    recs, rep = read_seeds(p)
    assert _lines_of(recs, rep) == list(range(1, len(lines) + 1))
    for r in recs:
        assert r["seed"] == clean_seed(json.loads(lines[int(r["id"].rsplit("-", 1)[1]) - 1])["caption"])[0]
