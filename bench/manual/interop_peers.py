"""Our exports in the peers' REAL code (manual check, issue 27 items 1-2; output in papers/interop.md).

Needs checkouts of haotian-liu/LLaVA (c121f04) and Yu-xm/Unicorn (f89be62) outside this repo, e.g.
  git -C <mirror of LLaVA> archive HEAD llava | tar -x -C /tmp/peers/LLaVA
  git -C <mirror of Unicorn> archive HEAD bunny | tar -x -C /tmp/peers/Unicorn
  python bench/manual/interop_peers.py --llava /tmp/peers/LLaVA --unicorn /tmp/peers/Unicorn
Nothing of theirs is copied or edited; two run-time shims only: `transformers.trainer.ALL_LAYERNORM_LAYERS` (gone from
transformers 5, imported by LLaVA's trainer module) and Unicorn's hard-coded `folder_path` mapped to our export.
"""
import argparse, copy, importlib, os, sys, tempfile, types
from pathlib import Path

import numpy as np
import torch

from unicorn.export import export_run
from unicorn.interop import (EmbeddingTower, IGNORE_INDEX, TEMPLATES, get_template, llava_data_module_factory,
                             template_check, tokenise_record, trainer_tokenizer)
from unicorn.packaged import load_smollm2_tokenizer
from unicorn.runs import EmbeddingShards, JsonlShards, RunLayout, atomic_write_json


def tiny_run(root: Path) -> RunLayout:
    "A run folder with 3 captions, 4 Stage 2 records (one with 2 rounds) and synthetic embeddings of width 8."
    run = RunLayout(root)
    atomic_write_json(root / "manifest.json", {"profile": "interop"})
    caps = ["A small red circle on a white background.", "Two blue squares side by side.", "A green triangle."]
    JsonlShards(run.captions).write(0, [{"id": f"cap-{i}", "caption": c} for i, c in enumerate(caps)])
    t = lambda q, a: [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    atomic_write_json(run.llava_json, [
        {"id": "r0", "image": "cap-0", "conversations": t("<image>\nWhat colour is the circle?", "Red.")},
        {"id": "r1", "image": "cap-1", "conversations": t("How many squares?\n<image>", "Two.") + t("What colour?", "Blue.")},
        {"id": "r2", "image": "cap-2", "conversations": t("<image>\nWhat shape is it?", "A triangle.")},
        {"id": "r3", "image": "cap-0", "conversations": t("<image>\nIs it big?", "No, it is small.")}])
    emb = np.random.default_rng(0).standard_normal((3, 8))
    EmbeddingShards(run.synthetic("unicorn_code")).write(0, ([f"cap-{i}" for i in range(3)], emb))
    return run


def llava_side(llava: Path, out: Path, tok) -> None:
    "LLaVA's own train module: our dataset factory, its preprocess/collator, its prepare_inputs_labels_for_multimodal."
    sys.path.insert(0, str(llava))
    import transformers.trainer as tt
    tt.ALL_LAYERNORM_LAYERS = getattr(tt, "ALL_LAYERNORM_LAYERS", [torch.nn.LayerNorm])
    T = importlib.import_module("llava.train.train")
    C = importlib.import_module("llava.conversation")
    from llava.model.llava_arch import LlavaMetaForCausalLM
    from llava.model.multimodal_projector.builder import build_vision_projector
    for template, data in (("plain", "pretrain.json"), ("v1", "instruction.json")):
        C.default_conversation = C.conv_templates[template if template == "plain" else "vicuna_v1"]
        T.conversation_lib.default_conversation = C.default_conversation
        tk = trainer_tokenizer(tok, "llava")
        args = T.DataArguments(data_path=str(out / "llava" / data), image_folder=str(out / "llava" / "features"),
                               is_multimodal=True)
        args.mm_use_im_start_end = False                       # LLaVA's train() copies it from the model arguments
        dm = llava_data_module_factory(T)(tk, args)
        items, recs = [], []
        for i, r in enumerate(dm["train_dataset"].records):
            try: items.append(dm["train_dataset"][i])
            except AttributeError as e:
                print(f"  LLaVA fails on record {r['id']!r}: AttributeError: {e}")
                continue
            recs.append(r)
        agree = all(it["labels"].tolist() == tokenise_record(r, tk, get_template("llava", template))[1]
                    for it, r in zip(items, recs))
        sup = sum(int((it["labels"] != IGNORE_INDEX).sum()) for it in items)
        tot = sum(len(it["labels"]) for it in items)
        print(f"LLaVA {template:5s} {data:17s}: {len(items)} records, supervised {sup}/{tot} = {sup / tot:.3f}; "
              f"unicorn.interop agrees with LLaVA's labels: {agree}")
        items = [it for it in items if (it["labels"] != IGNORE_INDEX).any()] or items
        batch = dm["data_collator"](items)
        print(f"  collator: input_ids {tuple(batch['input_ids'].shape)}, images {tuple(batch['images'].shape)}")
        cfg = types.SimpleNamespace(mm_projector_type="mlp2x_gelu", mm_hidden_size=8, hidden_size=32,
                                    mm_patch_merge_type="flat", tokenizer_model_max_length=None)
        class Tiny(LlavaMetaForCausalLM):
            "The smallest model LLaVA's mixin runs on: embeddings, the stand-in tower, LLaVA's own projector."
            def __init__(self):
                self.config, self.m = cfg, torch.nn.Module()
                self.m.embed_tokens = torch.nn.Embedding(len(tk), 32)
                self.m.mm_projector, self.m.vision_tower = build_vision_projector(cfg), EmbeddingTower(8, k=4)
                self.m.get_vision_tower = lambda: self.m.vision_tower
                self.device = torch.device("cpu")
            def get_model(self): return self.m
        _, _, mask, _, embeds, labels = Tiny().prepare_inputs_labels_for_multimodal(
            batch["input_ids"], None, batch["attention_mask"], None, batch["labels"], batch["images"])
        print(f"  prepare_inputs_labels_for_multimodal: inputs_embeds {tuple(embeds.shape)}, labels "
              f"{tuple(labels.shape)}, supervised per record {(labels != IGNORE_INDEX).sum(1).tolist()}")


def unicorn_side(unicorn: Path, out: Path, tok) -> None:
    "Unicorn's own LazySupervisedDataset and preprocess (folder_path mapped to our export) for plain and bunny."
    sys.path.insert(0, str(unicorn))
    D = importlib.import_module("bunny.util.data_utils")
    C = importlib.import_module("bunny.conversation")
    ours = str(out / "unicorn" / "embeddings")
    real_os = os
    mapped = lambda p: ours if str(p).startswith("/data/xmyu/") else p
    D.os = types.SimpleNamespace(listdir=lambda p: real_os.listdir(mapped(p)),
                                 path=types.SimpleNamespace(join=lambda a, *b: real_os.path.join(mapped(a), *b)))
    fixed = copy.deepcopy(tok)
    fixed.eos_token = fixed.pad_token = "<|endoftext|>"
    for template, data, tk_name, tk in (("plain", "pretrain.json", "SmolLM2", tok), ("bunny", "instruction.json", "SmolLM2", tok),
                                        ("bunny", "instruction.json", "SmolLM2, pad=eos=<|endoftext|>", fixed)):
        D.conversation_lib.default_conversation = C.conv_templates[template]
        tkt = trainer_tokenizer(tk, "bunny")
        args = types.SimpleNamespace(is_multimodal=True, image_aspect_ratio="square", image_processor=None)
        ds = D.LazySupervisedDataset(str(out / "unicorn" / data), tkt, args)
        items = [ds[i] for i in range(len(ds))]
        recs = ds.list_data_dict
        agree = all(it["labels"].tolist() == tokenise_record(r, tkt, get_template("bunny", template))[1]
                    for it, r in zip(items, recs))
        sup = sum(int((it["labels"] != IGNORE_INDEX).sum()) for it in items)
        tot = sum(len(it["labels"]) for it in items)
        emb = [np.shape(it["embed"]) for it in items]                           # Unicorn's item key for the vector
        print(f"Unicorn {template:5s} {data:17s} [{tk_name}]: {len(items)} records, supervised {sup}/{tot} = "
              f"{sup / tot:.3f}; embed shapes {sorted(set(emb))}; unicorn.interop agrees with Unicorn's labels: {agree}")


def main():
    "Export a tiny run, then feed it to both peers' code."
    ap = argparse.ArgumentParser()
    ap.add_argument("--llava", type=Path, required=True)
    ap.add_argument("--unicorn", type=Path, required=True)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp())
    run = tiny_run(root / "run")
    export_run(run.root, root / "export")
    tok = load_smollm2_tokenizer()
    for tr, tm in TEMPLATES:
        data = [r for r in __import__("json").loads((root / "export" / "llava" /
                ("pretrain.json" if tm == "plain" else "instruction.json")).read_text())]
        res = template_check(data, tok, tr, tm)
        print(f"template_check {tr}/{tm}: fraction {res['fraction']:.3f}, all-masked {len(res['all_masked'])}/{res['records']}")
    llava_side(a.llava, root / "export", tok)
    unicorn_side(a.unicorn, root / "export", tok)


if __name__ == "__main__":
    main()
