"""`python -m train.finetune` end to end: real Hydra, DeepSpeed (gloo on CPU), W&B offline."""
import json
import re
import signal
import time

import pytest
import torch

from conf.errors import BadInput
from tests.runs import LONG, QUICK, REPO, finetune, losses, records, weights
from conf.errors import EXIT_DIVERGED, EXIT_PREEMPTED


@pytest.fixture(scope="module")
def uninterrupted(env, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    code, out = finetune([f"run_dir={run_dir}", *LONG], env, REPO)
    assert code == 0, out
    return run_dir


def test_default_command_leaves_checkpoint_metrics_and_wandb_run(env, tmp_path):
    code, out = finetune([], env, tmp_path)  # exactly the README's command
    assert code == 0, out
    (run_dir,) = (tmp_path / "outputs" / "tiny").iterdir()
    # Its last lines, after W&B's: where the run went, what it did, and what to run next with it.
    last = out.strip().splitlines()[-8:]
    assert re.match(r"Run finished after \d+ s: step 30 of 30, 15,360 tokens seen, training loss \d\.\d{3}, "
                    r"validation perplexity [\d.]+ \(step 30\)$", last[0]), last
    assert last[1] == f"  run_dir:    {run_dir}" and last[2].endswith("checkpoints/step-00000030")
    assert last[5].startswith(f"  python -m train.evaluate checkpoint={run_dir} 'eval.lengths=[256,512,1024]'")
    assert last[6].startswith(f"  python -m train.generate checkpoint={run_dir} ")
    assert last[7] == f"  python -m train.export checkpoint={run_dir} output={run_dir / 'export'}"
    logged = records(run_dir)
    train = [r for r in logged if "loss" in r]
    assert [r["step"] for r in train] == list(range(1, 31))
    assert all({"loss", "lr", "tokens_per_s", "grad_norm", "tokens_seen"} <= r.keys() for r in train)
    assert train[-1]["loss"] < train[0]["loss"]
    assert any("val_loss" in r for r in logged)
    ckpts = run_dir / "checkpoints"
    assert (ckpts / "latest").read_text() == "step-00000030"
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-00000020", "step-00000030"]  # keep_last=2
    final = ckpts / "step-00000030"
    assert {"trainer_state.json", "config.yaml", "config.json", "tokenizer.json", "rng-rank00000.pt"} <= {
        p.name for p in final.iterdir()}
    assert json.loads((final / "config.json").read_text())["coca_variant"] == "slack"
    (wandb_run,) = (run_dir / "wandb").glob("offline-run-*")
    assert list(wandb_run.glob("run-*.wandb"))
    state = json.loads((final / "trainer_state.json").read_text())
    assert state["wandb_run_id"] in wandb_run.name and state["step"] == 30


@pytest.mark.long
def test_stop_signals_save_and_exit_with_code_a_kill_keeps_the_last_checkpoint_and_resumes_match(
        env, tmp_path, uninterrupted):
    """One run, as a preemptible job lives it: stopped by SIGTERM, requeued and stopped by a Ctrl-C
    (SIGINT), requeued and killed (a half-written later checkpoint left behind), requeued to the
    end; every requeue is the same command (resume=auto), and the losses are the uninterrupted
    run's. (SIGUSR1 sets the same request: tests/test_run_control.py.)"""
    run_dir = tmp_path / "run"
    ckpts = run_dir / "checkpoints"
    args = [f"run_dir={run_dir}", *LONG]

    def start_and_wait_for_a_save(after: int):
        """The job started again, once it has saved a checkpoint past step `after` (saves every 4)."""
        proc = finetune(args, env, REPO, wait=False)
        save = ckpts / f"step-{(after // 4 + 1) * 4:08d}" / "trainer_state.json"
        deadline = time.time() + 300
        while not save.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        return proc

    def latest() -> int:
        return int((ckpts / "latest").read_text().split("-")[1])

    stopped_at = 0
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        proc = start_and_wait_for_a_save(stopped_at)
        proc.send_signal(stop_signal)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == EXIT_PREEMPTED, (stop_signal, out)
        assert "Traceback" not in out and f"{stop_signal.name}: stopping at the next step boundary" in out
        if stopped_at:
            assert f"resumed from {ckpts / f'step-{stopped_at:08d}'}" in out
        assert max(4, stopped_at + 1) <= latest() < 40, (stop_signal, out)
        stopped_at = latest()

    proc = start_and_wait_for_a_save(stopped_at)
    proc.kill()
    proc.communicate()
    killed_at = latest()
    assert killed_at > stopped_at
    # A half-written later checkpoint, as a kill during a save would leave it: ignored.
    (ckpts / f"step-{killed_at + 2:08d}").mkdir(exist_ok=True)
    code, out = finetune(args, env, REPO)
    assert code == 0, out
    assert f"resumed from {ckpts / f'step-{killed_at:08d}'}" in out
    assert losses(run_dir) == losses(uninterrupted)  # bitwise, step for step
    wandb_runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 4 and len({p.name.rsplit("-", 1)[1] for p in wandb_runs}) == 1  # one run id


@pytest.mark.long
@pytest.mark.parametrize("stage", [2, 3])
def test_two_processes_match_one_and_resume_at_another_world_size(train_here, env, tmp_path, stage, caplog):
    # The one-rank runs are in this process (train_here), the two-rank ones under torchrun.
    one = tmp_path / "one"
    # A constant schedule, so that raising max_steps afterwards continues the same run.
    common = [*QUICK, f"deepspeed=zero{stage}", "logger.mode=disabled", "trainer.micro_batch_size=2",
              "optim.schedule=constant"]
    # At ZeRO-3 the one-rank run stops at 8 and continues to 12 like the two-rank run; at ZeRO-2 it
    # goes straight to 12 (resumes at ZeRO-2 on one rank are the stop-signal and checkpoint tests').
    one_steps = 8 if stage == 3 else 12
    assert train_here(f"run_dir={one}", "trainer.grad_accum=2", *common, f"trainer.max_steps={one_steps}") == 0
    if stage == 3:
        two = tmp_path / "two"
        code, out = finetune([f"run_dir={two}", "trainer.grad_accum=1", *common], env, REPO, nproc=2)
        assert code == 0, out
    else:
        # No run_dir: the two ranks must agree on the one they generate. --local_rank is what the
        # deepspeed launcher appends; the entry point must drop it.
        code, out = finetune(["trainer.grad_accum=1", *common, "--local_rank=0"], env, tmp_path, nproc=2)
        assert code == 0, out
        (two,) = (tmp_path / "outputs" / "tiny").iterdir()
        assert (two / "checkpoints" / "step-00000008" / "rng-rank00001.pt").is_file()
    single, double = losses(one), losses(two)
    assert double.keys() == set(range(1, 9)) and single.keys() == set(range(1, one_steps + 1))
    torch.testing.assert_close(torch.tensor(list(double.values())), torch.tensor([single[s] for s in range(1, 9)]),
                               rtol=1e-5, atol=1e-5)
    assert len(list((two / "checkpoints" / "step-00000008").glob("*optim_states.pt"))) == 2  # one per rank

    # Each continues at the other world size, through DeepSpeed's universal form: the two-rank run on
    # one rank and, at ZeRO-3, the one-rank run on two ranks, where rank 1 waits while rank 0
    # converts, for longer than the 3-second collective timeout given here.
    if stage == 3:
        code, out = finetune([f"run_dir={one}", "trainer.grad_accum=1", *common, "trainer.max_steps=12",
                              "trainer.collective_timeout_min=0.05"], env, REPO, nproc=2)
        assert code == 0, out
        assert "checkpoint saved by 1 ranks, this run has 2" in out
    with caplog.at_level("INFO"):
        assert train_here(f"run_dir={two}", "trainer.grad_accum=2", *common, "trainer.max_steps=12") == 0
    assert "checkpoint saved by 2 ranks, this run has 1" in caplog.text
    single, double = losses(one), losses(two)
    assert single.keys() == double.keys() == set(range(1, 13))
    torch.testing.assert_close(torch.tensor([double[s] for s in range(9, 13)]),
                               torch.tensor([single[s] for s in range(9, 13)]), rtol=1e-5, atol=1e-5)


def test_non_finite_steps_stop_the_run_without_a_checkpoint(train_here, tmp_path, sample_tokenizer, caplog):
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = sample_tokenizer
    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tokenizer)))
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    model.save_pretrained(tmp_path / "nan-model")
    run_dir = tmp_path / "run"
    with caplog.at_level("INFO"):
        assert train_here(f"run_dir={run_dir}", *QUICK, "model=llama2_7b", f"model.name_or_path={tmp_path / 'nan-model'}",
                          "model.tokenizer=sample", "model.dtype=float32", "trainer.max_bad_steps=2") == EXIT_DIVERGED
    out = caplog.text
    assert "non-finite loss or gradients" in out and "2 non-finite steps in a row: stopping" in out
    assert not list((run_dir / "checkpoints").glob("step-*"))


# Bad input fails fast with one line, through each path it can take (the Hydra composition path
# is tests/test_bad_input.py's): validate() lists every bad value in one message, so one run
# checks them all; setup-time checks raise one at a time, so one run takes that path and the
# others are checked in-process against the same function the run calls (build.model_config).
@pytest.mark.parametrize(
    "override,message",
    [
        ("model.name_or_path=./no/such/model", "model.name_or_path='./no/such/model' is not a folder"),
        ("+model.arch.vocab_size=100", "model.arch.vocab_size=100 is smaller than the tokenizer's 512 tokens"),
        ("model.rope_scaling={rope_type:ntk,factor:2}",
         "model.rope_scaling.rope_type='ntk' is not supported; choose one of default, linear, dynamic, yarn"),
    ],
)
def test_bad_model_input_is_refused_before_weights_load(sample_tokenizer, override, message):
    from tests.test_config import compose_config
    from train.trainer.build import model_config

    config = compose_config(override)
    with pytest.raises(BadInput, match=re.escape(message)):
        model_config(config.model, sample_tokenizer)


def test_stages_train_only_their_weights_and_init_from_takes_the_previous_weights(train_here, tmp_path, caplog):
    """The paper's recipe: stage 1 trains W_t only; stage 2 starts from stage 1's weights."""
    common = [*QUICK, "trainer.save_every=100"]
    frozen_lr = ["optim.lr=0.0", "trainer.max_steps=1"]  # a step that changes nothing: the starting weights
    start, stage1, stage2 = tmp_path / "start", tmp_path / "stage1", tmp_path / "stage2"
    for run_dir, extra in ((start, frozen_lr), (stage1, ["model.trainable=t_only", "trainer.max_steps=4"]),
                           (stage2, [*frozen_lr, "model.trainable=qkv", f"model.init_from={stage1}"])):
        with caplog.at_level("INFO"):
            assert train_here(f"run_dir={run_dir}", *common, *extra) == 0
    out = caplog.text
    initial, after1, after2 = weights(start, 1), weights(stage1, 4), weights(stage2, 1)
    for name, value in after1.items():
        moved = not torch.equal(value, initial[name])
        assert moved == name.endswith("self_attn.k_proj.weight"), name
    assert all(torch.equal(after2[name], value) for name, value in after1.items())
    assert f"weights from {stage1 / 'checkpoints' / 'step-00000004'}" in out
    assert [r["step"] for r in records(stage2) if "loss" in r] == [1]  # a fresh schedule, not a resume


def test_wandb_failure_falls_back_to_offline_and_training_goes_on(env, tmp_path):
    online = {k: v for k, v in env.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")}
    code, out = finetune([f"run_dir={tmp_path}", *QUICK, "trainer.max_steps=2", "logger.mode=online"], online, REPO)
    assert code == 0, out
    assert out.count("W&B online failed") == 1 and "logging offline to" in out
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    assert sorted(losses(tmp_path)) == [1, 2]
