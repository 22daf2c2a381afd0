"""Every stage that writes shards, SIGKILLed at random points and resumed, gives exactly the outputs of an uninterrupted run.

Each stage runs on tiny inputs with a deterministic stand-in where a model would be slow (an LLM whose reply is a
function of the prompt and the sampling seed, a hashing text/image encoder). The killed runs are subprocesses (this
file run as a script); the slow parts sleep a few ms and `os.fsync` is made slow there too, so kills land both
between and inside shard writes. The uninterrupted reference and the final resume run in this process."""
import hashlib, json, os, random, shutil, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve()
SEED = int(os.environ.get("UNICORN_KILL_SEED", "20261123"))   # the kill points are drawn from this seed

def _h(*parts) -> int: return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest(), 16)

# ---------------------------------------------------------------- deterministic stand-ins
COLOURS = ("red", "green", "blue", "yellow", "teal", "brown", "gray", "black")
SHAPES = ("circle", "rectangle", "triangle")
FILL = ("matte", "glossy", "smooth", "bright", "pale", "soft", "sharp", "clean", "thin", "wide", "flat", "plain",
        "centred", "small", "large", "even", "faint", "crisp", "dull", "neat")

def caption_reply(seed: str, sampling_seed: int) -> str:
    "A Stage-1 reply for `seed`: usually a valid caption; by hash a too-short echo or a colour conflict (then retried)."
    h = _h(seed, sampling_seed)
    if h % 5 == 0: return seed.capitalize() + "."                                   # rejected: prompt-echo
    if h % 5 == 1: return f"{seed.capitalize()} next to a purple and orange blob."   # rejected: too short
    w = [FILL[(h >> (5 * i)) % len(FILL)] for i in range(10)]
    return (f"{seed.capitalize()} is drawn on a {w[0]} white background. The shape looks {w[1]} and {w[2]}, "
            f"with {w[3]} edges and a {w[4]} surface. It sits near the {('left', 'right', 'top', 'middle')[h % 4]} of "
            f"the frame at a {w[5]} angle, and a {w[6]} shadow falls below it. The lighting is {w[7]} and the "
            f"outline is {w[8]}. Nothing else is in the picture, which is {w[9]}.")

def qa_reply(caption: str, task: str, sampling_seed: int) -> str:
    "A Stage-2 reply: usually valid JSON QA pairs built from the caption; by hash not JSON or too few items."
    h = _h(caption, task, sampling_seed)
    if h % 4 == 0: return "Sorry, I cannot help with that."                       # not-json
    ws = [w for w in caption.lower().replace(".", "").replace(",", "").split() if len(w) > 3]
    pick = [ws[(h >> (4 * j)) % len(ws)] for j in range(6)]
    n = 5 if h % 4 == 1 else 6                                                   # 5: schema minItems
    if task == "mc":
        items = []
        for j, w in enumerate(pick[:n]):
            opts = [w, "nothing at all", "a cloud", "a river"]
            k = (h >> j) % 4; opts[0], opts[k] = opts[k], opts[0]
            items.append({"question": f"Which word describes detail {j + 1}?", "options": dict(zip("ABCD", opts)),
                          "answer": "ABCD"[k]})
    elif task == "open":
        items = [{"question": f"What is detail {j + 1}?", "answer": f"It is {w}."} for j, w in enumerate(pick[:n])]
    else:
        items = [{"question": f"Why is detail {j + 1} likely?", "answer": f"The caption says {w}, so it is visible."}
                 for j, w in enumerate(pick[:n])]
    return json.dumps(items)

def _llm(delay: float):
    from unicorn.llm import LLMBackend, as_messages
    class StandIn(LLMBackend):
        "Replies are a function of the prompt and the sampling seed; each call sleeps `delay` s."
        name = "stand-in"
        def generate(self, prompts, sampling=None, json_schema=None, reply_prefix=""):
            time.sleep(delay)
            out = []
            for p in prompts:
                m = as_messages(p); last = m[-1]["content"]
                if last.startswith("Seed: "): out.append(caption_reply(last[6:], sampling.seed)); continue
                rule = m[0]["content"]
                task = "mc" if "multiple-choice" in rule else "reasoning" if "need reasoning" in rule else "open"
                out.append(qa_reply(last.removeprefix("Caption: "), task, sampling.seed))
            return out
    return StandIn()

class HashEncoder:
    "A dual-encoder stand-in: unit vectors drawn from a hash of the text / image bytes; each call sleeps `delay` s."
    name, dim = "hash", 16
    def __init__(self, delay: float = 0.0): self.delay = delay
    def _vec(self, key) -> np.ndarray:
        v = np.random.default_rng(_h(key) % 2**63).standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)
    def encode_text(self, texts, batch_size=64, progress=True):
        time.sleep(self.delay); return np.stack([self._vec(t) for t in texts])
    def encode_image(self, images, batch_size=64, progress=True):
        time.sleep(self.delay); return np.stack([self._vec(np.asarray(x).tobytes().hex()) for x in images])

# ---------------------------------------------------------------- the stages on tiny inputs
def seeds():
    return [{"id": f"seed-{i:03d}", "seed": f"a {COLOURS[i % 8]} {SHAPES[i // 8 % 3]}", "domain": "easyvqa", "label": None}
            for i in range(44)]

def stage_captions(root, delay):
    from unicorn.captions import run_captions, CaptionsConfig
    return run_captions(seeds(), _llm(delay), CaptionsConfig(shard_size=4), root, progress=False)

def captions_for_qa():
    return [{"id": f"cap-{i:03d}", "caption": caption_reply(f"a {COLOURS[i % 8]} {SHAPES[i % 3]}", 1000 + i)} for i in range(40)]

def stage_instructions(root, delay):
    from unicorn.instructions import run_instructions, InstructionsConfig
    return run_instructions(captions_for_qa(), _llm(delay), InstructionsConfig(shard_size=4), root, progress=False)

def stage_encode(root, delay):
    from unicorn.encoders import encode_to_shards
    from unicorn.runs import EmbeddingShards
    texts = [f"a {COLOURS[i % 8]} {SHAPES[i % 3]}" for i in range(96)]                 # repeated texts: encoded once
    imgs = list(np.random.default_rng(0).integers(0, 256, (64, 4, 4, 3), dtype=np.uint8))
    enc = HashEncoder(delay)
    a = encode_to_shards(enc, [f"t{i}" for i in range(96)], texts, EmbeddingShards(Path(root) / "text"), "text", shard_size=8)
    b = encode_to_shards(enc, [f"i{i}" for i in range(64)], imgs, EmbeddingShards(Path(root) / "image"), "image", shard_size=8)
    return {"text": a, "image": b}

def _src(root):
    "Input shards of the transfer stage: 14 shards of unit vectors (written once, never by the killed process)."
    from unicorn.runs import EmbeddingShards
    src = EmbeddingShards(Path(root) / "src", dim=16)
    if not src.shard_paths():
        rng = np.random.default_rng(7)
        for k in range(14):
            e = rng.standard_normal((5, 16)); src.write(k, ([f"r{k}-{j}" for j in range(5)], e / np.linalg.norm(e, axis=1, keepdims=True)))
    return src

def stage_transfer(root, delay):
    from unicorn.runs import EmbeddingShards
    from unicorn.transfer import transfer_shards, center_image_shards
    src = _src(Path(root).parent)
    a = transfer_shards(src, EmbeddingShards(Path(root) / "c3"), "c3", seed=3, progress=False)
    b = center_image_shards(src, EmbeddingShards(Path(root) / "centred"), "unicorn_paper", progress=False)
    return {"c3": a, "centred": b}

STAGES = {"captions": (stage_captions, ("captions_raw",), 11), "instructions": (stage_instructions, ("instructions_raw",), 10),
          "encode": (stage_encode, ("text", "image"), 20), "transfer": (stage_transfer, ("c3", "centred"), 28)}

# ---------------------------------------------------------------- kill, resume, compare
def _start(stage, root, log):
    return subprocess.Popen([sys.executable, str(HERE), stage, str(root)], stdout=subprocess.DEVNULL, stderr=open(log, "wb"))

def _parts(root: Path, dirs) -> int: return sum(len(list((root / d).glob("part-*"))) for d in dirs)
def _tmps(root: Path, dirs) -> list: return [p for d in dirs for p in (root / d).glob(".*.tmp")]

def _kill_twice(stage, root, rng) -> list[str]:
    """Start the stage in `root` and SIGKILL it at a random point, twice: once after a random number of new shards plus a
    random delay (it may land in the final writes after the last shard), once while a file is being written (a temp
    file exists: the next shard, or a final file). Returns what each kill interrupted."""
    dirs, n = STAGES[stage][1], STAGES[stage][2]; landed = []
    for mode in ("random", "mid-write"):
        log = root.parent / f"{stage}-{mode}.log"
        p = _start(stage, root, log)
        have = _parts(root, dirs)         # random: after 1..all of the shards still to write; mid-write: in the next write
        target = min(n, rng.randint(have + 1, n) if mode == "random" else rng.randint(have, max(have, n - 1)))
        deadline = time.time() + 60
        while p.poll() is None and time.time() < deadline:
            if _parts(root, dirs) >= target and (mode == "random" or list(root.rglob(".*.tmp"))): break
            time.sleep(0.001)
        if mode == "random": time.sleep(rng.uniform(0, 0.03))
        if p.poll() is None:
            at = _parts(root, dirs); os.kill(p.pid, signal.SIGKILL); p.wait()
            landed.append(f"{mode} kill at {at}/{n} shards{' (tmp left)' if list(root.rglob('.*.tmp')) else ''}")
        else:
            assert p.returncode == 0, log.read_text()[-3000:]
            landed.append(f"{mode}: finished before the kill")
    return landed

def _snapshot(root: Path) -> dict:
    "Every file under `root` (no temp files, no manifest) -> its bytes; stats.json without the written/resumed counts."
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.endswith(".tmp") or p.name in ("manifest.json", ".manifest.lock"): continue
        b = p.read_bytes()
        if p.name == "stats.json":
            s = json.loads(b); s.get("shards", {}).pop("written", None); s.get("shards", {}).pop("resumed", None)
            b = json.dumps(s, sort_keys=True).encode()
        out[str(p.relative_to(root))] = b
    return out

def _strip(counts):
    "A stage's returned statistics without what differs between a fresh and a resumed run."
    if isinstance(counts, dict):
        return {k: _strip(v) for k, v in counts.items() if k not in ("written", "resumed", "rows")}
    return counts

def check_stage(stage, tmp_path, seed):
    fn, raw, n = STAGES[stage]
    rng = random.Random(f"{seed}-{stage}")
    ref, run = tmp_path / "ref", tmp_path / "run"
    expected = _strip(fn(ref, 0.0))
    for attempt in range(3):                   # both kills missed (it finished first): start afresh with new draws
        landed = _kill_twice(stage, run, rng)
        if any("kill at" in l for l in landed): break
        shutil.rmtree(run)
    assert any("kill at" in l for l in landed), f"no kill landed: {landed}"
    assert 0 < _parts(run, raw), f"killed before the first shard: {landed}"
    got = _strip(fn(run, 0.0))                                       # resume in this process
    assert got == expected, f"{stage}: resumed statistics differ ({landed})"
    a, b = _snapshot(ref), _snapshot(run)
    assert sorted(b) == sorted(a), f"{stage}: other files after resume ({landed})"
    for k in a: assert b[k] == a[k], f"{stage}: {k} differs after resume ({landed})"
    if stage != "transfer":                                          # the stage's own shard writer cleans its folder
        assert _tmps(run, raw) == [], landed
    left = sorted(str(p.relative_to(run)) for p in run.rglob(".*.tmp"))
    print(stage, "temp files left after the resume:", left)
    from unicorn.runs import RunFolder
    RunFolder(run)                                                   # a notebook opening the run cleans what is left
    assert list(run.rglob("*.tmp")) == [], landed
    print(stage, landed)
    return landed

def test_captions_killed_and_resumed(tmp_path): check_stage("captions", tmp_path, SEED)
def test_instructions_killed_and_resumed(tmp_path): check_stage("instructions", tmp_path, SEED)
def test_encode_to_shards_killed_and_resumed(tmp_path): check_stage("encode", tmp_path, SEED)
def test_transfer_and_centring_killed_and_resumed(tmp_path): check_stage("transfer", tmp_path, SEED)

@pytest.mark.parametrize("stage,sub", [("transfer", "c3"), ("transfer", "centred"), ("captions", "captions"),
                                       ("instructions", "instructions")])
def test_killed_mid_write_resume_leaves_no_temp_file(tmp_path, stage, sub):
    "Killed while writing a file in `sub` (a temp file is left there), the stage run again on its own removes it."
    run = tmp_path / "run"
    if stage == "transfer": _src(tmp_path)
    for attempt in range(6):                        # until a kill leaves a temp file in `sub`
        p = _start(stage, run, tmp_path / "log")
        deadline = time.time() + 60
        while p.poll() is None and not list((run / sub).glob(".*.tmp")) and time.time() < deadline: time.sleep(0.0005)
        if p.poll() is None: os.kill(p.pid, signal.SIGKILL)
        p.wait()
        if list((run / sub).glob(".*.tmp")): break
    assert list((run / sub).glob(".*.tmp")), "no kill left a temp file"
    STAGES[stage][0](run, 0.0)                      # resumed to completion in this process
    assert list((run / sub).glob(".*.tmp")) == []

if __name__ == "__main__":          # the killed process: one stage with slow calls and a slow disk
    stage, root = sys.argv[1], Path(sys.argv[2])
    _fsync = os.fsync
    def slow_fsync(fd): time.sleep(0.012); _fsync(fd)
    os.fsync = slow_fsync
    STAGES[stage][0](root, 0.02)
