"Evaluation: the lmms-eval model answers hand-made requests; answer ranking matches full scoring; test-time centring."
import numpy as np, pytest
from lmms_eval.api.instance import Instance
from unicorn.fixtures import tiny_llama
from unicorn.vlm import UnicornVLM
from unicorn.evaluate import prompt_ids, rank_answers, score_continuations
from unicorn.lmms import UnicornLMM
from unicorn.vlm_data import vqa_prompt

@pytest.fixture(scope="module")
def vlm_tok():
    lm, tok = tiny_llama(seed=3)
    return UnicornVLM.from_lm(lm, tok, emb_dim=6, k=3).eval(), tok

EMB = np.random.default_rng(1).standard_normal((2, 6)).astype(np.float32)

def _meta(i): return {"task": "toy", "doc_id": i, "repeats": 1}

def test_lmms_adapter_hand_made_requests(vlm_tok):
    vlm, tok = vlm_tok
    A = UnicornLMM
    ad = A(vlm=vlm, tok=tok, image_encoder=lambda vis: EMB[[v for v in vis]], center_mean=EMB.mean(0))
    ad.task_dict = {"toy": {"test": [{"img": 0, "q": "What shape?", "a": "circle"}, {"img": 1, "q": "Is it red?", "a": "no"}]}}
    vis = lambda d: [d["img"]]
    ll = ad.loglikelihood([Instance("loglikelihood", ("What shape?", "circle", vis, 0, "toy", "test"), 0, _meta(0)),
                           Instance("loglikelihood", ("Is it red?", lambda d: d["a"], vis, 1, "toy", "test"), 1, _meta(1))])
    direct = score_continuations(vlm, [prompt_ids(tok, "<image>\nIs it red?", 3)], [tok("no", add_special_tokens=False).input_ids],
                                 EMB[1:2] - EMB.mean(0), tok.pad_token_id)[0][0]
    assert len(ll) == 2 and ll[1][0] == pytest.approx(-direct, abs=1e-4) and all(isinstance(g, bool) for _, g in ll)   # the loss
    gen = ad.generate_until([Instance("generate_until", ("What shape?", {"until": ["."], "max_new_tokens": 4}, vis, 0, "toy", "test"), 0, _meta(0))])
    assert len(gen) == 1 and isinstance(gen[0], str) and "." not in gen[0]
    # the same request without the image encoder is a text-only prompt: a different log-likelihood
    ad2 = A(vlm=vlm, tok=tok, blind=True); ad2.task_dict = ad.task_dict
    ll2 = ad2.loglikelihood([Instance("loglikelihood", ("Is it red?", "no", vis, 1, "toy", "test"), 0, _meta(1))])
    assert ll2[0][0] != pytest.approx(ll[1][0])

def test_rank_answers_matches_full_scoring(vlm_tok):
    vlm, tok = vlm_tok
    ps = [prompt_ids(tok, vqa_prompt(q), 3) for q in ("what colour?", "what shape?")]
    ans = ["red", "teal", "circle"]
    R = rank_answers(vlm, tok, ps, ans, EMB)
    for i in range(2):
        full = [score_continuations(vlm, [ps[i]], [tok(a, add_special_tokens=False).input_ids], EMB[i:i + 1], tok.pad_token_id)[0][0] for a in ans]
        np.testing.assert_allclose(R[i], full, atol=1e-3)

def test_evaluate_checkpoint_caches_per_centring_and_mode(tmp_path, monkeypatch):
    "A second call asking for another mode computes only that mode; a repeated call computes nothing."
    import json
    import unicorn.evaluate as ev
    from unicorn.runs import EmbeddingShards, RunFolder
    from unicorn.vlm import save_vlm
    run = RunFolder(tmp_path / "run", profile="mini")
    q = ev.eval_questions(2, 0)
    ids = sorted({f"test-img{i}" for i in q.image_id})
    EmbeddingShards(run.path("emb", "image_test"), dim=6).write(0, (ids, np.random.default_rng(0).standard_normal((len(ids), 6))))
    from unicorn.transfer import save_stats
    save_stats(run.emb_stats, mu_image_train=np.full(6, 0.1), mu_image_test=np.zeros(6))   # U's mean: the default centring
    lm, tok = tiny_llama(seed=3)
    v = UnicornVLM.from_lm(lm, tok, emb_dim=6, k=1); v.cfg.lm_weights = "saved"     # the LM saved with it (no base LM by name)
    ck = tmp_path / "ck"; save_vlm(v, ck, tok)
    (ck / "train_config.json").write_text(json.dumps({"config": {"method": "unicorn_code"}}))
    calls = []
    real = ev.evaluate_vlm
    monkeypatch.setattr(ev, "evaluate_vlm", lambda *a, **k: calls.append(list(a[4])) or real(*a, **k))
    r1 = ev.evaluate_checkpoint(run, ck, q, modes=["likelihood"], verbose=False)
    r2 = ev.evaluate_checkpoint(run, ck, q, modes=["likelihood", "generate"], verbose=False)
    r3 = ev.evaluate_checkpoint(run, ck, q, modes=["generate"], verbose=False)
    assert calls == [["likelihood"], ["likelihood"], ["generate"], ["generate"]]     # raw + centred, then only the new mode
    assert r1["raw"]["likelihood"] == r2["raw"]["likelihood"] and set(r3["centred"]) == {"generate"}
    assert (ck / "preds_centred_generate.csv").exists() and (ck / "preds_raw_likelihood.csv").exists()


def test_test_image_embeddings_paper_and_c3_centring(tmp_path):
    """ṽ = v − E[V] everywhere: the image pool U's mean ('pool', the default, and 'c3': the training images'), or the
    test set's own mean ('paper' / True, transductive); never re-normalised. 'pool' reads no test statistic: changing
    the other test images leaves a test image's centred embedding as it was."""
    from unicorn.evaluate import test_image_embeddings
    from unicorn.runs import EmbeddingShards, RunFolder
    from unicorn.transfer import l2norm, save_stats
    run = RunFolder(tmp_path / "run", profile="mini")
    v = np.random.default_rng(4).standard_normal((5, 6)).astype(np.float32)
    ids = [f"test-img{i}" for i in range(5)]
    EmbeddingShards(run.embeddings("image_test"), dim=6).write(0, (ids, v))
    mu_train = np.arange(6.)
    save_stats(run.emb_stats, mu_image_train=mu_train, mu_image_test=v.mean(0))
    raw = test_image_embeddings(run, ids[:2], False)
    np.testing.assert_allclose(raw, v[:2], atol=1e-3)                           # shards store float16
    for c in (True, "paper"):
        np.testing.assert_allclose(test_image_embeddings(run, ids[:2], c), raw - test_image_embeddings(run, ids, False).mean(0), atol=1e-5)
    for c in ("pool", "c3"):
        np.testing.assert_allclose(test_image_embeddings(run, ids[:2], c), raw - mu_train, atol=1e-5)
    other = RunFolder(tmp_path / "other", profile="mini")                          # the same two images, other test set
    EmbeddingShards(other.embeddings("image_test"), dim=6).write(0, (ids, np.concatenate([v[:2], 5 + v[2:]])))
    save_stats(other.emb_stats, mu_image_train=mu_train, mu_image_test=v.mean(0))
    np.testing.assert_array_equal(test_image_embeddings(other, ids[:2], "pool"), test_image_embeddings(run, ids[:2], "pool"))
    assert not np.allclose(test_image_embeddings(other, ids[:2], "paper"), test_image_embeddings(run, ids[:2], "paper"))
    with pytest.raises(ValueError, match="unknown centring"): test_image_embeddings(run, ids[:2], "mine")
    c3 = l2norm(l2norm(raw.astype(np.float64)) - mu_train)                       # C3's own input for a c3_spec VLM
    for c in (True, "paper", "c3"):
        np.testing.assert_allclose(test_image_embeddings(run, ids[:2], c, "c3_spec"), c3, atol=1e-5)
    np.testing.assert_array_equal(test_image_embeddings(run, ids[:2], False, "c3_spec"), raw)
    centred = test_image_embeddings(run, ids[:2], True)
    np.testing.assert_array_equal(test_image_embeddings(run, ids[:2], True, "realign"), centred)
