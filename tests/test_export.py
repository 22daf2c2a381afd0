"""Exports for LLaVA's and Unicorn's trainers (issue 14, part 4), checked against each peer loader's contract.

Neither peer ships on a package registry, so each contract is re-stated here from reading its code (not copied):
- LLaVA, `haotian-liu/LLaVA` `llava/train/train.py`: `LazySupervisedDataset.__init__` (`json.load` of a list),
  `__getitem__` (`os.path.join(data_args.image_folder, record['image'])`), `preprocess_multimodal` (the turn holding
  `<image>` becomes `<image>\\n` + the rest, stripped), `preprocess_v1`/`preprocess_plain` (turns alternate human/gpt,
  starting with a human turn; `plain`: two turns, `<image>` in the first), `DataCollatorForSupervisedDataset`
  (`torch.stack` of the items' `image`).
- Unicorn, `Yu-xm/Unicorn` `bunny/util/data_utils.py`: `LazySupervisedDataset.__init__` (every `*.pkl` in one folder,
  each a list of dicts extended into one list), `__getitem__` (`'caption' in record`, else `None`; the `embed` whose
  `str(id)` equals the record's `str(id)`), `DataCollatorForSupervisedDataset` (`torch.stack` of `torch.from_numpy`
  of each `embed`); `bunny/model/bunny_arch.py` `get_image_feature` (embeds `[batch, d]`); `data/embed_mean.py`
  (`caption_embeddings_<i>.pkl`, `embed` a 1-D ndarray).
"""
import json, os, pickle, pickletools, re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from unicorn.export import (LlavaEmbeddingDataset, export_llava, export_run, export_unicorn, feature_file, portable_pickle)
from unicorn.runs import EmbeddingShards, JsonlShards, RunLayout, atomic_write_json
from unicorn.vlm_data import EmbeddingIndex, RecordError

IMAGE = "<image>"


# --- the peers' contracts, as their code reads the data -------------------------------------------------------------

def peer_normalise(value: str) -> str:
    "What both peers' `preprocess_multimodal` makes of a turn that holds `<image>`."
    return (IMAGE + "\n" + value.replace(IMAGE, "").strip()).strip()

def check_turns(conv, plain: bool = False):
    "Turns alternate human/gpt from a human turn; one `<image>`, in a human turn, where the peer's rewrite leaves it."
    assert isinstance(conv, list) and conv
    assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
    assert all(isinstance(t["value"], str) for t in conv)
    held = [j for j, t in enumerate(conv) if IMAGE in t["value"]]
    assert len(held) == 1 and held[0] % 2 == 0 and conv[held[0]]["value"].count(IMAGE) == 1
    v = conv[held[0]]["value"]
    assert v == peer_normalise(v) and (v == IMAGE or v.startswith(IMAGE + "\n"))
    if plain: assert len(conv) == 2 and held == [0]

def llava_contract(folder: Path) -> dict:
    "Check an LLaVA export as LLaVA's loader reads it; return image path → loaded feature."
    info = json.loads((folder / "export_info.json").read_text())
    image_folder = folder / info["image_folder"]
    feats = {}
    for name, rel in info["data_path"].items():
        recs = json.load(open(folder / rel))
        assert isinstance(recs, list)
        for r in recs:
            check_turns(r["conversations"], plain=name == "pretrain")
            assert isinstance(r["image"], str) and not os.path.isabs(r["image"])
            p = os.path.join(image_folder, r["image"])                         # how LLaVA finds the file
            assert os.path.isfile(p) and Path(p).resolve().parent.parent == image_folder.resolve()
            assert re.fullmatch(r"[0-9a-f]{2}/[a-z0-9][a-z0-9._-]*\.npy", r["image"]), r["image"]
            feats[r["image"]] = np.load(p, allow_pickle=False)
    shapes = {v.shape for v in feats.values()}
    assert len(shapes) <= 1 and all(len(s) == 1 for s in shapes)               # the collator stacks them
    if feats: torch.stack([torch.from_numpy(v) for v in feats.values()])
    return feats

def unicorn_contract(folder: Path) -> dict:
    "Check a Unicorn export as Unicorn's loader reads it; return record id → the embed the loader would attach."
    info = json.loads((folder / "export_info.json").read_text())
    pool = []
    for f in os.listdir(folder / info["folder_path"]):                          # every .pkl in the folder
        if f.endswith(".pkl"): pool.extend(pickle.load(open(folder / info["folder_path"] / f, "rb")))
    assert all(isinstance(e, dict) and {"id", "embed"} <= set(e) for e in pool)
    found = {}
    for name, rel in info["data_path"].items():
        for r in json.load(open(folder / rel)):
            assert "caption" in r and isinstance(r["caption"], str) and r["caption"].strip()
            check_turns(r["conversations"], plain=name == "pretrain")
            hits = [e["embed"] for e in pool if str(e.get("id")) == str(r["id"])]
            assert hits, f"no embed for {r['id']!r}"
            found[str(r["id"])] = hits[-1]                                        # the loader keeps the last match
    embeds = list(found.values())
    assert all(isinstance(e, np.ndarray) and e.ndim == 1 and e.dtype == np.float32 for e in embeds)
    if embeds: assert torch.stack([torch.from_numpy(e) for e in embeds]).shape == (len(embeds), embeds[0].shape[0])
    return found


# --- a tiny run -----------------------------------------------------------------------------------------------------

def _turns(q, a): return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]

def make_run(root: Path) -> RunLayout:
    run = RunLayout(root)
    atomic_write_json(root / "manifest.json", {"profile": "test"})
    JsonlShards(run.captions).write(0, [{"id": "cap-0", "caption": "A red circle."}, {"id": "Cap 1/é", "caption": "Two squares."}])
    atomic_write_json(run.llava_json, [
        {"id": "r0", "image": "cap-0", "task_type": "open", "conversations": _turns("What colour?\n<image>", "Red.")},
        {"id": "r1", "image": "cap-0", "task_type": "mc", "conversations": _turns("<image>How many?\nA. one\nB. two", "A")
         + _turns("And now?", "B")},
        {"id": "r2", "image": "Cap 1/é", "task_type": "open", "conversations": _turns("<image>\nShapes?", "Squares.")}])
    emb = np.array([[0.5, -1.0, 0.1, 3.0], [1.0, 0.0, -0.3, 0.125]])
    EmbeddingShards(run.synthetic("unicorn_code")).write(0, (["cap-0", "Cap 1/é"], emb))
    return run

@pytest.fixture
def exported(tmp_path):
    run = make_run(tmp_path / "run")
    return run, export_run(run.root, tmp_path / "export")


def test_llava_export_meets_llavas_contract_and_round_trips_exactly(exported):
    run, outs = exported
    index = EmbeddingIndex(run.synthetic("unicorn_code"))
    feats = llava_contract(outs["llava"])
    recs = json.loads((outs["llava"] / "instruction.json").read_text())
    assert [r["id"] for r in recs] == ["r0", "r1", "r2"]
    assert recs[0]["conversations"][0]["value"] == "<image>\nWhat colour?"       # moved to the start, as LLaVA would
    assert recs[1]["conversations"][0]["value"] == "<image>\nHow many?\nA. one\nB. two"
    assert recs[0]["image"] == recs[1]["image"] == feature_file("cap-0")        # one file per embedding
    for r in recs:
        v = feats[r["image"]]
        assert v.dtype == np.float32 and v.shape == (4,) and np.array_equal(v, index[r["embedding_id"]])
    pre = json.loads((outs["llava"] / "pretrain.json").read_text())
    assert [p["conversations"] for p in pre] == [_turns(IMAGE, "A red circle."), _turns(IMAGE, "Two squares.")]

def test_unicorn_export_meets_unicorns_contract_and_round_trips_exactly(exported):
    run, outs = exported
    index = EmbeddingIndex(run.synthetic("unicorn_code"))
    found = unicorn_contract(outs["unicorn"])
    recs = json.loads((outs["unicorn"] / "instruction.json").read_text())
    assert [(r["id"], r["record_id"]) for r in recs] == [("cap-0", "r0"), ("cap-0", "r1"), ("Cap 1/é", "r2")]
    assert recs[2]["caption"] == "Two squares."
    for i in ("cap-0", "Cap 1/é"): assert np.array_equal(found[i], index[i])
    assert sorted(os.listdir(outs["unicorn"] / "embeddings")) == ["caption_embeddings_1.pkl"]

def test_unicorn_pickles_load_under_any_numpy(exported):
    "No `numpy._core` (NumPy 2) or `numpy.core` path: only `numpy.frombuffer` and `bytearray`; arrays come back writable."
    _, outs = exported
    data = (outs["unicorn"] / "embeddings" / "caption_embeddings_1.pkl").read_bytes()
    ops = list(pickletools.genops(data))
    strings = [a for op, a, _ in ops if isinstance(a, str)]
    assert "numpy._core.multiarray" not in strings and "numpy.core.multiarray" not in strings
    assert {s for s in strings if "numpy" in s or "core" in s} == {"numpy"}
    assert {"frombuffer", "builtins", "bytearray"} <= set(strings)
    assert all(e["embed"].flags.writeable for e in pickle.loads(data))

def test_llava_dataset_feeds_a_llava_style_preprocess_and_collate(exported):
    _, outs = exported
    seen = []
    def preprocess(sources, tokenizer, has_image=False):   # LLaVA's signature; a byte tokenizer stands in
        assert len(sources) == 1 and has_image
        seen.append(sources[0])
        ids = torch.tensor([b for t in sources[0] for b in t["value"].encode()])
        return {"input_ids": [ids], "labels": [ids.clone()]}
    ds = LlavaEmbeddingDataset(outs["llava"] / "instruction.json", outs["llava"] / "features", tokenizer=None, preprocess=preprocess)
    items = [ds[i] for i in range(len(ds))]
    assert set(items[0]) == {"input_ids", "labels", "image"}
    assert seen[0][0]["value"] == "<image>\nWhat colour?"
    images = torch.stack([it["image"] for it in items])                          # what LLaVA's collator does
    assert images.shape == (3, 4) and images.dtype == torch.float32
    assert ds.modality_lengths[0] > 0 and ds.lengths[0] == 3 + 1 + 128

def test_datasets_reads_the_exported_json(exported, tmp_path):
    datasets = pytest.importorskip("datasets")   # installed in .venv (5.2.0); the check is skipped only without it
    _, outs = exported
    for fmt in ("llava", "unicorn"):
        for name in ("instruction", "pretrain"):
            ds = datasets.load_dataset("json", data_files=str(outs[fmt] / f"{name}.json"), split="train", cache_dir=str(tmp_path / "hf"))
            want = json.loads((outs[fmt] / f"{name}.json").read_text())
            assert len(ds) == len(want) and ds[0]["conversations"] == want[0]["conversations"] and ds[0]["id"] == want[0]["id"]

def test_bad_input_names_the_record_and_field(tmp_path):
    rec = {"id": "q7", "image": "e1", "conversations": _turns("<image>\nHi?", "Yes.")}
    vec = {"e1": np.ones(3, np.float32)}
    cases = [
        (lambda: export_llava([rec], {}, tmp_path / "a"), "record 'q7' (#0): field 'image' = 'e1' has no embedding"),
        (lambda: export_llava([{**rec, "conversations": _turns("Hi?", "Yes.")}], vec, tmp_path / "b"), "record 'q7' (#0): field 'conversations'"),
        (lambda: export_llava([rec], {"e1": np.array([1.0, np.inf])}, tmp_path / "c"), "record 'q7' (#0): field 'image'"),
        (lambda: export_llava([rec, {**rec, "id": "q8", "image": "e2"}], {**vec, "e2": np.ones(5, np.float32)}, tmp_path / "d"),
         "record 'q8' (#1): field 'image' = 'e2': embedding width 5 != 3"),
        (lambda: export_llava([rec], {"e1": np.full(3, 0.1)}, tmp_path / "e"), "record 'q7' (#0): field 'image'"),
        (lambda: export_unicorn([rec], vec, {}, tmp_path / "f"), "record 'q7' (#0): field 'caption'"),
        (lambda: export_unicorn([{k: v for k, v in rec.items() if k != "image"}], vec, {"e1": "x"}, tmp_path / "g"), "field 'image'"),
        (lambda: export_unicorn([{**rec, "conversations": [{"from": "gpt", "value": "x"}]}], vec, {"e1": "x"}, tmp_path / "h"),
         "record 'q7' (#0): field 'conversations[0].from'"),
    ]
    for f, msg in cases:
        with pytest.raises(RecordError) as e: f()
        assert msg in str(e.value)
    assert not list(tmp_path.iterdir())                                           # nothing written, no staging left

def test_an_export_replaces_only_an_export(tmp_path):
    rec = {"id": "q7", "image": "e1", "conversations": _turns("<image>\nHi?", "Yes.")}
    (tmp_path / "mine").mkdir(); (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not an export"): export_llava([rec], {"e1": np.ones(2)}, tmp_path / "mine")
    p = export_llava([rec], {"e1": np.ones(2)}, tmp_path / "x")
    with pytest.raises(FileExistsError, match="overwrite=True"): export_llava([rec], {"e1": np.ones(2)}, p)
    export_llava([{**rec, "image": "e2"}], {"e2": np.zeros(2)}, p, overwrite=True)
    assert [r["embedding_id"] for r in json.loads((p / "instruction.json").read_text())] == ["e2"]
    assert len(list((p / "features").rglob("*.npy"))) == 1                       # the old feature file is gone
    assert sorted(f.name for f in tmp_path.iterdir()) == ["mine", "x"]

def test_llava_dataset_refuses_a_path_out_of_the_feature_folder(exported, tmp_path):
    _, outs = exported
    rec = json.loads((outs["llava"] / "instruction.json").read_text())[0]
    for bad in ["../export_info.json", "/etc/passwd.npy", "../../x.npy"]:
        atomic_write_json(tmp_path / "bad.json", [{**rec, "image": bad}])
        with pytest.raises(RecordError, match=r"record 'r0' \(#0\): field 'image'"):
            LlavaEmbeddingDataset(tmp_path / "bad.json", outs["llava"] / "features")
    atomic_write_json(tmp_path / "gone.json", [{**rec, "image": "00/missing.npy"}])
    with pytest.raises(RecordError, match=r"record 'r0' \(#0\): field 'image' = '00/missing.npy'"):
        LlavaEmbeddingDataset(tmp_path / "gone.json", outs["llava"] / "features")[0]

def test_export_run_refuses_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder"): export_run(tmp_path, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# --- property: random small record sets, odd ids -------------------------------------------------------------------

_ids = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)   # datasets-free check allows all
_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20).filter(lambda s: s.strip() and IMAGE not in s)

@st.composite
def record_sets(draw):
    eids = draw(st.lists(_ids, min_size=1, max_size=4, unique=True))
    rids = draw(st.lists(_ids, min_size=1, max_size=5, unique=True))
    recs = []
    for rid in rids:
        q, a = draw(_text), draw(_text)
        where = draw(st.sampled_from(["start", "end", "middle", "alone"]))
        q = {"start": IMAGE + q, "end": q + "\n" + IMAGE, "middle": q[:1] + IMAGE + q[1:], "alone": IMAGE}[where]
        recs.append({"id": rid, "image": draw(st.sampled_from(eids)), "conversations": _turns(q, a)})
    dim = draw(st.integers(1, 6))
    vecs = {e: np.asarray(draw(st.lists(st.floats(-1e4, 1e4, width=32), min_size=dim, max_size=dim)), np.float32) for e in eids}
    caps = {e: draw(_text) for e in eids}
    drop = draw(st.none() | st.sampled_from([r["image"] for r in recs]))      # sometimes one embedding is missing
    return recs, {e: v for e, v in vecs.items() if e != drop}, caps, drop

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(record_sets())
def test_property_exports_meet_both_contracts_or_name_the_record(tmp_path_factory, data):
    recs, vecs, caps, drop = data
    out = tmp_path_factory.mktemp("prop")
    if drop is not None:
        with pytest.raises(RecordError) as e: export_llava(recs, vecs, out / "llava", captions=caps)
        first = next(r for r in recs if r["image"] == drop)
        if "has no embedding" in str(e.value):                                  # else a record failed its check first
            assert f"record {first['id']!r} (#{recs.index(first)}): field 'image' = {drop!r} has no embedding" in str(e.value)
        assert "field '" in str(e.value) and not list(out.iterdir())
        return
    try:
        llava = export_llava(recs, vecs, out / "llava", captions=caps)
        uni = export_unicorn(recs, vecs, caps, out / "unicorn")
    except RecordError as e:                                                     # e.g. a question read as options
        msg, named = str(e), [r["id"] for r in recs] + ["pt-" + k for k in caps]
        assert "field '" in msg and any(f"record {repr(i)[:40]}" in msg for i in named), msg
        return
    feats = llava_contract(llava)
    got = json.loads((llava / "instruction.json").read_text())
    assert [g["id"] for g in got] == [r["id"] for r in recs]
    for g, r in zip(got, recs):
        assert g["embedding_id"] == r["image"] and np.array_equal(feats[g["image"]], vecs[r["image"]])
        assert g["conversations"][0]["value"] == peer_normalise(r["conversations"][0]["value"])
    found = unicorn_contract(uni)
    for r in recs: assert np.array_equal(found[r["image"]], vecs[r["image"]]) and found[r["image"]].dtype == np.float32
    assert len({feature_file(e) for e in vecs}) == len(vecs)                     # distinct ids, distinct files


# --- issue 26 item 7: duplicate caption ids; issue 27 item 3: the command line and the `hf` format --------------------

def test_a_repeated_caption_id_is_refused_not_silently_kept(tmp_path):
    "A captions shard holding `1` and `\"1\"` (or one id twice) is refused, naming the shard line; nothing is written."
    run = make_run(tmp_path / "run")
    JsonlShards(run.captions).write(1, [{"id": "cap-0", "caption": "Another text."}])
    with pytest.raises(RecordError, match=r"part-00001.jsonl line 1: field 'id' = 'cap-0' repeats id 'cap-0'"):
        export_run(run.root, tmp_path / "out")
    JsonlShards(run.captions).write(1, [{"id": 7, "caption": "x"}, {"id": "7", "caption": "y"}])
    with pytest.raises(RecordError, match=r"line 2: field 'id' = '7' repeats id 7 of"):
        export_run(run.root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.integers(-3, 3), st.sampled_from(["0", "1", "-1", "a", "A", "01"])), min_size=1, max_size=6))
def test_property_caption_ids_unique_as_text_or_refused(tmp_path_factory, ids):
    from unicorn.export import run_captions
    store = JsonlShards(tmp_path_factory.mktemp("caps") / "captions")
    store.write(0, [{"id": i, "caption": f"c{n}"} for n, i in enumerate(ids)])
    if len({str(i) for i in ids}) < len(ids):
        with pytest.raises(RecordError, match="repeats id"): run_captions(store)
    else: assert run_captions(store) == {str(i): f"c{n}" for n, i in enumerate(ids)}


def _cli(*args, env=None):
    import subprocess, sys
    env = os.environ | {"OMP_NUM_THREADS": "1"} | (env or {})
    return subprocess.run([sys.executable, "-m", "unicorn.export", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_exports_every_format_atomically(tmp_path):
    "`python -m unicorn.export RUN OUT --format llava,unicorn,hf`: all three written, each meets its reader."
    run = make_run(tmp_path / "run")
    p = _cli(run.root, tmp_path / "out", "--format", "llava,unicorn,hf")
    assert p.returncode == 0, p.stderr[-2000:]
    outs = json.loads(p.stdout.strip().splitlines()[-1])
    assert sorted(outs) == ["hf", "llava", "unicorn"] and sorted(os.listdir(tmp_path / "out")) == ["hf", "llava", "unicorn"]
    feats = llava_contract(Path(outs["llava"]))
    found = unicorn_contract(Path(outs["unicorn"]))
    import datasets
    ds = datasets.load_dataset(outs["hf"])                                      # the dataset card names the splits
    assert set(ds) == {"instruction", "pretrain"} and ds["instruction"]["id"] == ["r0", "r1", "r2"]
    emb = EmbeddingIndex(run.synthetic("unicorn_code"))
    for r in ds["instruction"]:
        np.testing.assert_array_equal(np.asarray(r["embedding"], np.float32), np.asarray(emb[r["image"]], np.float32))
    assert len(feats) == 2 and len(found) == 2


def test_cli_refuses_without_overwrite_and_names_bad_input(tmp_path):
    run = make_run(tmp_path / "run")
    assert _cli(run.root, tmp_path / "out", "--format", "hf").returncode == 0
    before = (tmp_path / "out" / "hf" / "instruction.parquet").read_bytes()
    p = _cli(run.root, tmp_path / "out", "--format", "hf")
    assert p.returncode == 1 and "pass overwrite=True" in p.stderr
    p = _cli(run.root, tmp_path / "out", "--format", "hf,coco")
    assert p.returncode == 1 and "unknown ['coco']" in p.stderr
    p = _cli(tmp_path / "nothing", tmp_path / "out2")
    assert p.returncode == 1 and "not a run folder" in p.stderr and not (tmp_path / "out2").exists()
    atomic_write_json(run.llava_json, [{"id": "r9", "image": "missing", "conversations": _turns("<image>\nQ?", "A.")}])
    p = _cli(run.root, tmp_path / "out", "--format", "hf", "--overwrite")
    assert p.returncode == 1 and "record 'r9'" in p.stderr and "has no embedding" in p.stderr
    assert (tmp_path / "out" / "hf" / "instruction.parquet").read_bytes() == before     # the earlier export is intact
    assert sorted(os.listdir(tmp_path / "out")) == ["hf"]                                 # no staging folder left
