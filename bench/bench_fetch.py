"""Item fetch at the paper's scale: this repo's pre-tokenised `VLMDataset` vs the authors' `LazySupervisedDataset`.

Both serve the same records (1.2 M caption conversations, ids unique) with the same embeddings (1.2 M x 1280
float16, 3.07 GB) and return what a training step needs from an item: token ids, answer-only labels and the image
embedding. Side by side in one run:

* **authors**: their access pattern, reimplemented here from reading `bunny/util/data_utils.py` of Yu-xm/Unicorn
  (not copied): all embeddings loaded as a list of `{id, embed}` dicts; per item a deep copy of the conversation,
  `preprocess_multimodal`'s `<image>` fix-up, the Bunny "TWO" template, `tokenizer_image_token` and the per-round
  label masking (each round tokenised again), then a walk over *every* embedding record comparing ids as strings
  (their loop has no `break`).
* **ours**: `VLMDataset` over a saved `TokenStore` (memory-mapped, found by the records' fingerprint) and an
  `EmbeddingIndex` over memory-mapped shards: item `i` is two array slices and one row read. The headline maps the
  embedding pages in when the index opens (`populate=True`, the same footing as their in-memory list); the run also
  times a fresh index whose pages are mapped on first touch.

Timed per item, in alternating rounds on fresh random items (medians and the range of the per-round ratios, because
this machine's speed varies between runs): one `ds[i]` at a time (`ours_item_us`, `speedup`), and items fetched a
micro-batch at a time (`__getitems__`, what the training loader calls: `ours_item_in_micro_batch_us`). Also timed: a
whole micro-batch of 128 items fetched and padded into tensors (`micro_batch`), which is what a training step waits
for, and the one-off costs (tokenising, writing and opening the store). The store is built from `--distinct`
conversations tokenised with the packaged SmolLM2 tokenizer and repeated as 1.2 M separate sequences (none shared),
so each fetch reads its own bytes. Prints one JSON object.

    .venv/bin/python bench/bench_fetch.py                              # 1.2 M x 1280 (needs ~8 GB of RAM, ~7 GB disk)
    .venv/bin/python bench/bench_fetch.py --records 20000 --dim 64     # seconds
"""
from __future__ import annotations
import argparse, copy, json, os, random, shutil, tempfile, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import numpy as np

IMAGE_TOKEN_INDEX = -200                      # the authors' placeholder id for `<image>` in token ids
SYSTEM = "A chat between a curious user and an artificial intelligence assistant. " \
         "The assistant gives helpful, detailed, and polite answers to the user's questions."


def records(n: int, distinct: int) -> list[dict]:
    "`n` LLaVA caption records with unique ids whose conversations cycle through `distinct` captions."
    words = "red blue green small large round square wooden metal bright dark old new striped".split()
    rng = random.Random(0)
    caps = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 60))) + "." for _ in range(distinct)]
    return [{"id": f"cap{i}", "image": f"cap{i}", "caption": caps[i % distinct],
             "conversations": [{"from": "human", "value": "<image>\nDescribe the image in detail."},
                               {"from": "gpt", "value": caps[i % distinct]}]} for i in range(n)]


# ---- the authors' loader, reimplemented from reading their code ----------------------------------------------------
def image_token_ids(prompt: str, tok) -> list[int]:
    "Their `tokenizer_image_token`: tokenise the text around each `<image>` and put the placeholder id between."
    chunks = [tok(c).input_ids for c in prompt.split("<image>")]
    out = []
    for j, c in enumerate(chunks):
        if j: out.append(IMAGE_TOKEN_INDEX)
        out.extend(c)
    return out


class AuthorsDataset:
    "Their `LazySupervisedDataset.__getitem__` access pattern (Bunny template, has_image=True)."
    def __init__(self, recs: list[dict], tok, embeddings: list[dict]):
        self.recs, self.tok, self.embeddings = recs, tok, embeddings
    def __getitem__(self, i: int) -> dict:
        import torch
        src = copy.deepcopy([self.recs[i]["conversations"]])
        for turn in src[0]:                                          # preprocess_multimodal
            if "<image>" in turn["value"]:
                turn["value"] = ("<image>\n" + turn["value"].replace("<image>", "").strip()).strip()
        roles, sep, sep2 = ("USER", "ASSISTANT"), " ", "<|endoftext|>"
        prompt = SYSTEM + sep + "".join(f"{roles[j % 2]}: {t['value']}" + (sep, sep2)[j % 2] for j, t in enumerate(src[0]))
        ids = torch.tensor(image_token_ids(prompt, self.tok), dtype=torch.long)
        labels = ids.clone(); cur = 0
        for rnd in prompt.split(sep2):                               # mask each round's instruction (re-tokenised)
            if not rnd: break
            parts = rnd.split(sep + roles[1] + ": ")
            if len(parts) != 2: break
            n_round = len(image_token_ids(rnd, self.tok)) + 1
            n_instr = len(image_token_ids(parts[0] + sep + roles[1] + ": ", self.tok)) - 1
            labels[cur:cur + n_instr] = -100; cur += n_round
        labels[cur:] = -100
        out = {"input_ids": ids, "labels": labels}
        for e in self.embeddings:                                    # every record, compared as strings, no break
            if str(e.get("id")) == str(self.recs[i]["id"]): out["embed"] = e.get("embed")
        return out


# ---- the benchmark -------------------------------------------------------------------------------------------------
def timed(f, n: int) -> float:
    "Mean seconds of `f(j)` over `j < n`."
    t0 = time.perf_counter()
    for j in range(n): f(j)
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_200_000); ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--shard", type=int, default=100_000); ap.add_argument("--distinct", type=int, default=4096)
    ap.add_argument("--items", type=int, default=4096, help="our fetches timed per round")
    ap.add_argument("--author-items", type=int, default=2, help="the authors' fetches timed per round")
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds of ours and theirs (medians reported)")
    ap.add_argument("--batch", type=int, default=128, help="items per timed micro-batch (the paper's global batch)")
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temporary one, removed after)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args()
    import torch
    from unicorn.packaged import load_smollm2_tokenizer
    from unicorn.runs import EmbeddingShards
    from unicorn.train import StageSchedule, micro_batch
    from unicorn.vlm import image_token_id
    from unicorn.vlm_data import SYSTEM_PROMPT, EmbeddingIndex, TokenStore, VLMDataset, token_fingerprint
    torch.set_num_threads(1)
    tmp = Path(a.dir or tempfile.mkdtemp(prefix="bench_fetch_")); tmp.mkdir(parents=True, exist_ok=True)
    out = {"records": a.records, "dim": a.dim, "distinct_texts": a.distinct, "cpus": os.cpu_count()}
    try:
        tok = load_smollm2_tokenizer(); image_token_id(tok)
        recs = records(a.records, a.distinct)
        # the embeddings: float16 shards of `--shard` rows
        st, rng, t0 = EmbeddingShards(tmp / "emb", dim=a.dim), np.random.default_rng(0), time.time()
        for s in range(0, a.records, a.shard):
            m = min(a.shard, a.records - s)
            st.write(s // a.shard, ([f"cap{i}" for i in range(s, s + m)], rng.standard_normal((m, a.dim), np.float32).astype(np.float16)))
        out["write_embeddings_s"] = round(time.time() - t0, 2)
        index = EmbeddingIndex(tmp / "emb")
        # the store: `--distinct` conversations tokenised, repeated as one sequence per record (nothing shared)
        t0 = time.time(); small = TokenStore.from_records(recs[:a.distinct], tok, index, "chat")
        out["tokenise_per_record_ms"] = round((time.time() - t0) / a.distinct * 1e3, 3)
        lens = np.diff(small.offsets)[small.entry]; reps = a.records // a.distinct + 1
        seq = lambda x: np.concatenate([x[small.offsets[u]:small.offsets[u + 1]] for u in small.entry])
        ids, labels = np.tile(seq(small.ids), reps), np.tile(seq(small.labels), reps)
        offsets = np.concatenate([[0], np.cumsum(np.tile(lens, reps))])[: a.records + 1].astype(np.int64)
        t0 = time.time(); fp = token_fingerprint(recs, tok, "chat", 1, 512, True, SYSTEM_PROMPT)
        out["fingerprint_s"] = round(time.time() - t0, 2)
        t0 = time.time()
        path = TokenStore(ids[: offsets[-1]], labels[: offsets[-1]], offsets, np.arange(a.records, dtype=np.int32), fp).save(
            tmp / "tokens" / f"chat-{fp[:24]}.safetensors")
        out["write_store_s"] = round(time.time() - t0, 2); out["store_mb"] = round(path.stat().st_size / 2**20, 1)
        del ids, labels, offsets
        t0 = time.time(); ds = VLMDataset(recs, tok, index, "chat", store_dir=tmp / "tokens")
        out["open_dataset_s"] = round(time.time() - t0, 2)           # fingerprint, image checks, memory-map
        assert ds.store.path is not None and len(ds.store.offsets) == a.records + 1, "the saved store was not used"
        q = random.Random(0).sample(range(a.records), a.items)
        lazy = timed(lambda j: ds[q[j]], a.items)                    # embedding pages mapped on first touch
        t0 = time.time(); ds = VLMDataset(recs, tok, EmbeddingIndex(tmp / "emb", populate=True), "chat", store_dir=tmp / "tokens")
        out["open_dataset_populated_s"] = round(time.time() - t0, 2)  # every embedding page mapped in at open
        sch = StageSchedule(steps=1, lr=0.0, batch_size=a.batch)
        class _Acc: device = torch.device("cpu")
        nb = max(1, a.items // a.batch)
        step = timed(lambda j: micro_batch(_Acc, ds.__getitems__(q[j * a.batch:(j + 1) * a.batch]), tok.pad_token_id, None, image_token_id(tok)), nb)
        # the authors': all embeddings in memory as {id, embed} dicts (their pickles), the same rows
        t0 = time.time()
        embs = [{"id": i, "embed": row} for s in st for i, row in zip(s.ids, np.asarray(s.emb))]
        out["author_load_s"] = round(time.time() - t0, 2)
        theirs_ds = AuthorsDataset(recs, tok, embs)
        for i in q[:3]:                                              # same embedding, same answer tokens
            mine, theirs = ds[i], theirs_ds[i]
            assert np.array_equal(mine["image_emb"].numpy(), theirs["embed"].astype(np.float32))
            want = tok.decode([t for t in mine["labels"] if t != -100]).replace("<|im_end|>", "").strip()
            got = tok.decode([int(t) for t in theirs["labels"] if t != -100])
            assert want in got, (want, got)                          # their masks assume a BOS token: one more may show
        # side by side: rounds alternate ours (one at a time, then a micro-batch at a time) and theirs, on fresh items
        rows = []
        for r in range(a.rounds):
            qr = random.Random(100 + r).sample(range(a.records), a.items)
            one = timed(lambda j: ds[qr[j]], a.items)
            many = timed(lambda j: ds.__getitems__(qr[j * a.batch:(j + 1) * a.batch]), nb) / a.batch
            theirs = timed(lambda j: theirs_ds[qr[j]], a.author_items)
            rows.append((one, many, theirs))
        one, many, theirs = (np.array(x) for x in zip(*rows))
        med = lambda x: float(np.median(x))
        out |= {"rounds": a.rounds, "items_timed_per_round": {"ours": a.items, "authors": a.author_items},
                "ours_item_us": round(med(one) * 1e6, 2), "ours_item_in_micro_batch_us": round(med(many) * 1e6, 2),
                "authors_item_ms": round(med(theirs) * 1e3, 1),
                "speedup": round(med(theirs / one)), "speedup_range": [round(float((theirs / one).min())), round(float((theirs / one).max()))],
                "speedup_batched": round(med(theirs / many)), "speedup_batched_range": [round(float((theirs / many).min())), round(float((theirs / many).max()))],
                "ours_item_us_pages_mapped_on_first_touch": round(lazy * 1e6, 2),
                f"ours_micro_batch_{a.batch}_ms": round(step * 1e3, 2),
                f"authors_micro_batch_{a.batch}_s_estimated": round(med(theirs) * a.batch, 1)}
    finally:
        if a.dir is None: shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(out, indent=1); print(text)
    if a.out: Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
