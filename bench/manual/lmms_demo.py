"""lmms-eval CLI generation task on make demo's Unicorn checkpoint (issue 27 done-when).

    .venv/bin/python bench/manual/lmms_demo.py runs/mini /tmp/lmms_demo
"""
import json, subprocess, sys
from pathlib import Path
from unicorn.lmms import lmms_eval_command, write_local_task
from unicorn.packaged import load_easyvqa
from unicorn.vlm_data import VQA_SUFFIX
run = Path(sys.argv[1]).resolve(); out = Path(sys.argv[2]).resolve()
ck = sorted(p for p in (run / "vlm").glob("unicorn_code-*-s0-*") if (p / "train_config.json").exists())[0]
q = load_easyvqa("test")
q = q[q.qtype != "yes/no"].groupby("qtype").head(20)
docs = [{"question": r.question.strip() + VQA_SUFFIX, "image": r.image_path, "answer": r.answer} for r in q.itertuples()]
write_local_task(out / "tasks", "easyvqa_gen", docs, "generate_until", max_new_tokens=8)
cmd = lmms_eval_command(ck, run / "minicl", run / "emb" / "stats.safetensors", "easyvqa_gen", out / "tasks", out / "out")
print(" ".join(cmd))
p = subprocess.run(cmd, capture_output=True, text=True)
print(p.returncode, p.stdout[-1500:], p.stderr[-1500:])
res = json.loads(next((out / "out").rglob("*_results.json")).read_text())["results"]["easyvqa_gen"]
print(json.dumps(res))
s = [json.loads(l) for l in next((out / "out").rglob("*samples_easyvqa_gen.jsonl")).read_text().splitlines()]
print([ (x["target"], x["filtered_resps"]) for x in s[:6]])
