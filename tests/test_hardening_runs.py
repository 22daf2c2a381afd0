"Run folders and config under bad input: exact-or-refused resume, locked manifest, orphan temp files, file modes, nonsense settings."
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np, pytest

from unicorn.config import ConfigError, ParameterError, resolve_config
from unicorn.runs import (MANIFEST_VERSION, EmbeddingShards, JsonlShards, ManifestError, RunFolder, ShardError,
                          StageLockedError, StageSettingsError, atomic_write_bytes, map_shards)

# --- resume with changed settings -------------------------------------------------------------------------------

KILLED_STAGE = textwrap.dedent("""
    import json, os, signal, sys
    from unicorn.runs import JsonlShards, RunFolder
    run = RunFolder(sys.argv[1])
    with run.run_stage(sys.argv[2], params=json.loads(sys.argv[3])):
        JsonlShards(run.path(sys.argv[2])).write(0, [{"id": "stale"}])
        os.kill(os.getpid(), signal.SIGKILL)                          # dies holding the stage's lock
""")

def _interrupt(run, name, params, how):
    "Leave stage `name` as a kill (status running) or an exception (status failed) would, with one shard written."
    if how == "killed":
        p = subprocess.run([sys.executable, "-c", KILLED_STAGE, str(run.root), name, json.dumps(params)])
        assert p.returncode == -signal.SIGKILL
    else:
        with pytest.raises(RuntimeError), run.run_stage(name, params=params):
            JsonlShards(run.path(name)).write(0, [{"id": "stale"}]); raise RuntimeError("server went away")

@pytest.mark.parametrize("how", ["killed", "failed"])
def test_interrupted_stage_resumed_with_other_settings_refuses(tmp_path, how):
    run = RunFolder(tmp_path / "run", profile="mini")
    _interrupt(run, "instructions", {"max_new_tokens": 24, "seed": 0}, how)
    assert run.stage("instructions")["status"] == ("running" if how == "killed" else "failed")
    with pytest.raises(StageSettingsError, match=r"'instructions' in .* was interrupted .* max_new_tokens = 24 there, 48 now"):
        with run.run_stage("instructions", params={"max_new_tokens": 48, "seed": 0}): pass
    assert run.stage("instructions")["params"]["max_new_tokens"] == 24     # the manifest still tells the truth
    with run.run_stage("instructions", params={"max_new_tokens": 24, "seed": 0}) as info:   # same settings: resumes
        assert info is not None
    assert run.is_done("instructions")

def test_force_restarts_an_interrupted_stage_with_new_settings(tmp_path):
    run = RunFolder(tmp_path / "run", profile="mini")
    _interrupt(run, "captions", {"max_new_tokens": 24}, "failed")
    with run.run_stage("captions", params={"max_new_tokens": 48}, force=True) as info:   # the caller clears old outputs
        assert info is not None
    assert run.stage("captions")["params"] == {"max_new_tokens": 48} and run.is_done("captions")
    with pytest.raises(StageSettingsError, match="finished with other settings"):       # unchanged for finished stages
        with run.run_stage("captions", params={"max_new_tokens": 96}): pass

# --- concurrent manifest updates ---------------------------------------------------------------------------------

UPDATER = textwrap.dedent("""
    import sys
    from unicorn.runs import RunFolder
    run = RunFolder(sys.argv[1])
    for i in range(int(sys.argv[3])): run.update_stage(f"{sys.argv[2]}-{i}", status="done", i=i)
""")

def test_concurrent_manifest_updates_lose_nothing(tmp_path):
    RunFolder(tmp_path, profile="mini")
    ps = [subprocess.Popen([sys.executable, "-c", UPDATER, str(tmp_path), w, "300"]) for w in ("a", "b")]
    assert [p.wait(timeout=120) for p in ps] == [0, 0]
    stages = json.loads((tmp_path / "manifest.json").read_text())["stages"]
    assert len(stages) == 600 and all(stages[f"{w}-{i}"]["i"] == i for w in "ab" for i in range(300))

# --- orphan temporary files and file modes ----------------------------------------------------------------------

KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from unicorn import runs
    os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)    # die after writing the temp file, before the rename
    runs.atomic_write_bytes(sys.argv[1], b"half a shard")
""")

def _killed_write(path: Path) -> list[Path]:
    "Temporary files that a writer SIGKILLed between write and rename leaves beside `path`."
    p = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)])
    assert p.returncode == -signal.SIGKILL and not path.exists()
    return sorted(path.parent.glob(".*.tmp"))

def test_orphan_tmp_files_are_cleaned_when_the_run_opens(tmp_path):
    RunFolder(tmp_path / "run", profile="mini")
    left = _killed_write(tmp_path / "run" / "captions" / "part-00003.jsonl")
    assert len(left) == 1
    mine = tmp_path / "run" / "captions" / f".part-00004.jsonl.{os.getpid()}.abcd1234.tmp"   # a live writer's: kept
    mine.write_bytes(b"busy")
    RunFolder(tmp_path / "run")
    assert sorted((tmp_path / "run" / "captions").glob(".*.tmp")) == [mine]

def test_orphan_tmp_files_are_cleaned_when_map_shards_resumes(tmp_path):
    store = JsonlShards(tmp_path / "s")
    assert len(_killed_write(store.path(1))) == 1
    map_shards(range(6), lambda c: [{"id": i} for i in c], store, 3, progress=False)
    assert list(store.root.glob(".*")) == [] and len(store) == 6

def test_outputs_get_the_users_normal_mode(tmp_path):
    old = os.umask(0o027)
    try:
        run = RunFolder(tmp_path / "run", profile="mini")
        paths = [atomic_write_bytes(tmp_path / "x.bin", b"x"), run.manifest_path,
                 JsonlShards(run.path("rec")).write(0, [{"id": "a"}]), EmbeddingShards(run.path("emb")).write(0, (["a"], np.ones((1, 2))))]
    finally: os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in paths} == {oct(0o640)}       # 0o666 & ~0o027, not mkstemp's 0o600

# --- values a shard cannot hold ----------------------------------------------------------------------------------

def test_float16_overflow_is_refused_at_write(tmp_path):
    st = EmbeddingShards(tmp_path / "emb", dim=3)
    with pytest.raises(ShardError, match=r"part-00000.safetensors: value 100000 in row 1 \(id 'b'\) overflows float16"):
        st.write(0, (["a", "b"], np.array([[1.0, 0, 0], [0, 1e5, 0]])))
    assert not st.exists(0)
    st.write(0, (["a"], np.full((1, 3), 65504.0)))                           # float16's largest value is fine
    assert st.read(0).emb.max() == 65504

@pytest.mark.parametrize("ids, msg", [(["a", "a"], "duplicate id 'a' in rows 0 and 1"), (["a", ""], "empty id in row 1")])
def test_embedding_shards_refuse_duplicate_and_empty_ids(tmp_path, ids, msg):
    with pytest.raises(ShardError, match=msg): EmbeddingShards(tmp_path / "emb").write(0, (ids, np.eye(2)))

# --- nonsense settings -------------------------------------------------------------------------------------------

def test_config_refuses_nonsense_in_real_presets():
    from unicorn.captions import PRESETS as CAPTIONS
    from unicorn.instructions import PRESETS as INSTRUCTIONS
    for bad, msg in [(dict(temperature=-0.5), "temperature = -0.5: a temperature must be >= 0"),
                     (dict(top_p=5.0), "top_p = 5.0: top_p must be in (0, 1]"), (dict(top_p=0.0), "top_p must be in (0, 1]"),
                     (dict(min_words=500), "min_words = 500 > max_words = 400")]:
        with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
            resolve_config(CAPTIONS, "mini", **bad)
    with pytest.raises(ConfigError, match="InstructionsConfig.min_pairs = 9 > max_pairs = 6"):
        resolve_config(INSTRUCTIONS, "mini", min_pairs=9)
    with pytest.raises(ConfigError, match="retry_temperature = -1.0"):
        resolve_config(INSTRUCTIONS, "mini", retry_temperature=-1.0)

def test_config_refuses_zero_visual_tokens():
    from unicorn.train import PRESETS as TRAIN
    from unicorn.vlm import expand_image_tokens
    with pytest.raises(ConfigError, match="TrainConfig.k = 0: must be >= 1"): resolve_config(TRAIN, "mini", k=0)
    with pytest.raises(ValueError, match="k = 0: an image needs at least one visual token"): expand_image_tokens([1, 7, 2], 7, 0)
    assert resolve_config(TRAIN, "mini", k=576).k == 576

def test_nothing_from_a_run_folder_executes_code():
    "No pickle-based load that can run code: every torch.load in the package passes weights_only=True."
    import re
    from unicorn.pipeline import repo_root
    for p in sorted((repo_root() / "unicorn").glob("*.py")):
        for call in re.findall(r"torch\.load\([^)]*\)", p.read_text()):
            assert "weights_only=True" in call, (p.name, call)
        assert "weights_only=False" not in p.read_text(), p.name

# --- one writer per stage (issue 26, item 2) ----------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys, time
    from unicorn.runs import JsonlShards, RunFolder
    root, mode, started, pause = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    run = RunFolder(root)
    store = JsonlShards(run.captions)
    with run.run_stage("captions", params={"n": 6}, force=mode == "force", clears=[run.captions]) as info:
        for k in range(3):
            store.write(k, [{"id": f"{k}-{j}"} for j in range(2)])
            open(started, "w").close()                                  # tell the test a shard is written
            time.sleep(pause)
        info["records"]["written"] = len(store); info["outputs"].append(run.captions)
""")

def _start_writer(root, mode, flag, pause):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(root), mode, str(flag), str(pause)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

@pytest.mark.parametrize("mode", ["resume", "force"])
def test_a_second_writer_of_a_running_stage_refuses_and_the_first_is_intact(tmp_path, mode):
    "Two processes run one stage at once: the second refuses naming the first; the first's store and manifest agree."
    from unicorn.runs import sha256_file
    run = RunFolder(tmp_path / "run", profile="mini")
    first = _start_writer(run.root, "resume", tmp_path / "a.started", 1.0)
    deadline = time.time() + 60
    while not (tmp_path / "a.started").exists():
        assert first.poll() is None and time.time() < deadline, first.communicate()
        time.sleep(0.05)
    second = _start_writer(run.root, mode, tmp_path / "b.started", 0.0)
    out, err = second.communicate(timeout=120)
    assert second.returncode != 0 and not (tmp_path / "b.started").exists()
    assert f"StageLockedError: stage 'captions' is already running: pid {first.pid} on host" in err
    assert first.wait(timeout=120) == 0, first.communicate()
    st, store = run.stage("captions"), JsonlShards(run.captions)
    assert st["status"] == "done" and st["records"]["written"] == len(store) == 6
    assert st["checksums"] == {str(p.relative_to(run.root)): sha256_file(p) for p in store.shard_paths()}

def test_the_lock_of_a_killed_writer_is_taken_over(tmp_path, capsys):
    run = RunFolder(tmp_path / "run", profile="mini")
    _interrupt(run, "captions", {"n": 1}, "killed")
    holder = json.loads(run.lock_path("captions").read_text())          # the dead writer's pid is still written there
    assert holder["stage"] == "captions" and holder["pid"] != os.getpid()
    with run.run_stage("captions", params={"n": 1}) as info: assert info is not None      # resumes: nobody holds it
    assert f"taking over the lock of pid {holder['pid']}" in capsys.readouterr().out
    assert run.is_done("captions") and run.lock_path("captions").read_text() == ""       # released when done

def test_a_stage_lock_names_its_holder_in_the_same_process(tmp_path):
    run = RunFolder(tmp_path / "run", profile="mini")
    with run.run_stage("a", params={}):
        with pytest.raises(StageLockedError, match=rf"stage 'a' is already running: this process, pid {os.getpid()}"):
            with run.run_stage("a", params={}): pass
        with run.run_stage("b", params={}) as info: assert info is not None   # other stages run alongside
    assert run.is_done("a") and run.is_done("b")

# --- typed parameters and run_stage (issue 26, item 1) ------------------------------------------------------------

@pytest.mark.parametrize("force", ["false", "no", "True", 1, None])
def test_force_must_be_a_bool_and_a_finished_stage_survives(tmp_path, force):
    run = RunFolder(tmp_path / "run", profile="mini")
    with run.run_stage("seeds", params={"n": 1}) as info:
        JsonlShards(run.seeds).write(0, [{"id": "a"}])
        info["outputs"].append(run.seeds)
    with pytest.raises(ParameterError, match=rf"stage 'seeds': force = {force!r} \(\w+\): expected a bool"):
        with run.run_stage("seeds", params={"n": 1}, force=force, clears=[run.seeds]): pass
    assert run.is_done("seeds") and len(JsonlShards(run.seeds)) == 1

def test_a_refused_parameter_leaves_the_recorded_settings_alone(tmp_path):
    "Fresh: no settings recorded, so the corrected run needs no force. Interrupted: its settings stay as they were."
    run = RunFolder(tmp_path / "run", profile="mini")
    def refuse(params):
        with pytest.raises(ParameterError), run.run_stage("seeds", params=params):
            raise ParameterError("parameter 'n_seeds' = 'five' (str): expected int")
    refuse({"n_seeds": "five"})
    why = "ParameterError: parameter 'n_seeds' = 'five' (str): expected int"
    assert run.stage("seeds") == {"status": "refused", "refused": why}
    _interrupt(run, "captions", {"n": 24}, "failed")
    before = run.stage("captions")
    with pytest.raises(ParameterError), run.run_stage("captions", params={"n": 24}): raise ParameterError("no")
    assert {k: v for k, v in run.stage("captions").items() if k != "refused"} == {**before, "status": "failed"}
    with pytest.raises(StageSettingsError): run.run_stage("captions", params={"n": 48}).__enter__()   # still protected
    with run.run_stage("seeds", params={"n_seeds": 5}) as info: assert info is not None
    assert run.is_done("seeds") and run.stage("seeds")["params"] == {"n_seeds": 5}

# --- damaged manifests and escaping names (issue 26, item 6) ------------------------------------------------------

@pytest.mark.parametrize("text, msg", [
    ("", "manifest.json: empty file"), ("{\"stages\": {\"a\"", r"manifest.json: not valid JSON \(.* at line 1 column"),
    ("[]", "manifest.json: must hold a JSON object, got a list"), ("[1, 2]", "must hold a JSON object, got a list"),
    ("\"x\"", "must hold a JSON object, got a str"), ("{\"stages\": []}", "field 'stages' must be dict, got list"),
    ("{\"stages\": {\"a\": 5}}", "field 'stages.a' must be dict, got int"),
    ("{\"stages\": {\"a\": {\"params\": []}}}", "field 'stages.a.params' must be dict, got list"),
    ("{\"profile\": 5}", "field 'profile' must be str or null, got int"),
    ("{\"seed\": true}", "field 'seed' must be int"),
    ("{\"version\": \"2\"}", "field 'version' must be int, got str"),
    ("{\"version\": 2, \"stages\": {}}", "field 'version' = 2: written by a newer unicorn"),
    ("[" * 100_000, "manifest.json: not valid JSON"),
])
def test_a_damaged_manifest_is_refused_naming_file_and_field(tmp_path, text, msg):
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(ManifestError, match=msg): RunFolder(tmp_path, profile="mini")
    assert (tmp_path / "manifest.json").read_text() == text                  # never replaced or "repaired"

def test_a_manifest_records_its_version(tmp_path):
    run = RunFolder(tmp_path, profile="mini")
    assert run.manifest()["version"] == MANIFEST_VERSION
    m = run.manifest()
    del m["version"]                                                           # an older run folder
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    assert RunFolder(tmp_path).manifest()["version"] == MANIFEST_VERSION

@pytest.mark.parametrize("bad", ["../../x", "..", "/etc", "/tmp/x", "a/../../b", "", "a\0b"])
def test_no_path_helper_leads_out_of_the_run_folder(tmp_path, bad):
    run = RunFolder(tmp_path / "run", profile="mini")
    calls = [lambda: run.study(bad), lambda: run.study("gap", bad), lambda: run.vlm(bad), lambda: run.embeddings(bad),
             lambda: run.synthetic(bad), lambda: run.eval_result(bad), lambda: run.path(bad),
             lambda: run.path("emb", bad)]
    for call in calls:
        with pytest.raises(ValueError, match="would lead out of the run folder"): call()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
