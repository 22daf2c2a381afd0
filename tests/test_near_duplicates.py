"Near-duplicate removal on datasketch's MinHash LSH gives what the hand-written MinHash LSH it replaced gave."
import hashlib

import numpy as np
from hypothesis import given, settings, strategies as st

from unicorn.captions import jaccard, near_duplicates, shingles

# --- the replaced implementation (before issue 14), kept here only as the reference to compare against ---
_P = (1 << 61) - 1

def _old_minhash(sh: set[str], num_perm: int = 64, seed: int = 0) -> np.ndarray:
    "MinHash signature of a shingle set: `num_perm` minima of universal hashes (a·x + b mod 2^61−1)."
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _P, num_perm, dtype=np.uint64); b = rng.integers(0, _P, num_perm, dtype=np.uint64)
    if not sh: return np.full(num_perm, _P, dtype=np.uint64)
    x = np.array([int.from_bytes(hashlib.blake2b(s.encode(), digest_size=7).digest(), "little") for s in sh],
                 dtype=object)
    h = (np.outer(x, a.astype(object)) + b.astype(object)) % _P
    return h.min(axis=0).astype(np.uint64)

def old_near_duplicates(texts, threshold: float = 0.8, bands: int = 16, rows: int = 4) -> dict[int, int]:
    "The hand-written MinHash LSH: `{i: j}` for each text `i` that near-duplicates an earlier kept text `j`."
    sh = [shingles(t) for t in texts]
    sigs = [_old_minhash(s, bands * rows) for s in sh]
    buckets: dict = {}
    dup: dict[int, int] = {}
    for i, sig in enumerate(sigs):
        keys = [(bi, sig[bi * rows:(bi + 1) * rows].tobytes()) for bi in range(bands)]
        cands = sorted({j for k in keys for j in buckets.get(k, ())})
        hit = next((j for j in cands if jaccard(sh[i], sh[j]) >= threshold), None)
        if hit is not None: dup[i] = hit; continue
        for k in keys: buckets.setdefault(k, []).append(i)
    return dup

# --- hypothesis: caption sets with exact copies, small edits of long captions, and unrelated captions ---
VOCAB = ("a red blue green circle square triangle sits in the middle of white grey canvas its edge is smooth and fill "
         "flat even with no texture background plain large small shape left right corner bright dark").split()

def _edit(words: list[str], op: int, pos: int, word: str) -> list[str]:
    "One small edit: 0 copy, 1 replace, 2 insert, 3 delete, 4 truncate the tail (a third of it at most)."
    p = pos % len(words)
    if op == 1: return words[:p] + [word] + words[p + 1:]
    if op == 2: return words[:p] + [word] + words[p:]
    if op == 3 and len(words) > 1: return words[:p] + words[p + 1:]
    if op == 4: return words[:len(words) - min(p, len(words) // 3)]
    return list(words)

@st.composite
def caption_sets(draw) -> list[str]:
    "Base captions (1 to 80 words) and chains of edited copies of earlier captions, shuffled."
    texts = [draw(st.lists(st.sampled_from(VOCAB), min_size=1, max_size=80)) for _ in range(draw(st.integers(1, 6)))]
    for _ in range(draw(st.integers(0, 12))):
        src = texts[draw(st.integers(0, len(texts) - 1))]
        texts.append(_edit(src, draw(st.integers(0, 4)), draw(st.integers(0, 79)), draw(st.sampled_from(VOCAB))))
    order = draw(st.permutations(range(len(texts))))
    return [" ".join(texts[i]).capitalize() + "." for i in order]

# Both are LSH: a pair of Jaccard J is a candidate with probability 1 - (1 - J^rows)^bands, so the two can differ only
# where that is not ~1 at the threshold (16 x 4 at 0.8: a pair at exactly 0.8 is missed with probability 2e-4).
@settings(max_examples=300, deadline=None, derandomize=True)
@given(caption_sets(), st.sampled_from([(0.8, 16, 4), (0.9, 16, 4), (0.5, 64, 1)]))
def test_same_as_hand_written_lsh(texts, layout):
    "Same `{near-duplicate: kept}` map as the replaced implementation, at Stage 1's threshold and LSH layout and others."
    threshold, bands, rows = layout
    assert near_duplicates(texts, threshold, bands, rows) == old_near_duplicates(texts, threshold, bands, rows)

def test_duplicates_are_verified_exactly():
    "Every reported pair really is at or above the threshold, points back to a kept text, and exact copies are caught."
    base = ("A red circle sits in the middle of a white square canvas and its edge is smooth while the fill is a flat "
            "even red with no texture on a plain white background")
    texts = [base, base.replace("middle", "centre"), "A blue triangle on grey.", base, "", "", base + " again"]
    dup = near_duplicates(texts)
    assert dup == {1: 0, 3: 0, 6: 0}                        # two empty texts share no shingle: not duplicates
    assert all(jaccard(shingles(texts[i]), shingles(texts[j])) >= 0.8 and j not in dup for i, j in dup.items())
    assert near_duplicates([]) == {} and near_duplicates(texts, 1.0) == {3: 0}

def test_bands_rows_reach_datasketch():
    "bands × rows is the LSH layout datasketch uses: two 32-row bands almost never pair a Jaccard-1/3 pair, 64 one-row bands do."
    from datasketch import MinHashLSH
    assert MinHashLSH(num_perm=64, params=(16, 4)).b == 16
    texts = ["one two three four", "one two three five"]                # Jaccard 1/3
    assert near_duplicates(texts, 0.3, bands=2, rows=32) == {}          # 32 minima must agree: 2 x (1/3)^32
    assert near_duplicates(texts, 0.3, bands=64, rows=1) == {1: 0}       # 64 one-row bands: certainly a candidate
