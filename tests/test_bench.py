"""The benchmarks' own arithmetic and command lines (their measurements live in bench/RESULTS.md)."""
import math
import subprocess
import sys

import pytest
import torch

from bench import throughput, ulysses
from tests.runs import REPO


def test_all_to_all_volume_is_the_four_projections_three_times_per_layer():
    seven_b = ulysses.SHAPES["7b"]
    # Q, K, V and the output, 4096 bf16 values each, forward + recomputation + backward, 32 layers, 7/8 sent.
    assert ulysses.all_to_all_bytes_per_token(seven_b, sp=8) == 3 * 4 * 4096 * 2 * 32 * 7 / 8
    assert ulysses.all_to_all_bytes_per_token(seven_b, sp=1) == 0
    # Grouped-query attention sends fewer K/V values: 1B has 4 key-value heads of 64.
    one_b = ulysses.SHAPES["1b"]
    assert ulysses.all_to_all_bytes_per_token(one_b, sp=4) == 3 * (2 * 2048 + 2 * 256) * 2 * 22 * 3 / 4


def test_projection_is_the_measured_rate_without_communication_and_slower_with_it():
    same = ulysses.projected_tokens_per_s("7b", 1000.0, 32768, 32768, sp=1, dp=1, bandwidth=1.0)
    assert same == pytest.approx(1000.0)
    longer = ulysses.projected_tokens_per_s("7b", 1000.0, 32768, 262144, sp=1, dp=1, bandwidth=1.0)
    assert longer < 1000.0  # attention's work per token grows with the length
    slow, fast = (ulysses.projected_tokens_per_s("7b", 1000.0, 32768, 262144, 8, 1, bw) for bw in (50e9, 400e9))
    assert slow < fast < longer
    assert math.isfinite(slow) and slow > 0


def test_ulysses_refuses_a_degree_that_does_not_divide_the_heads():
    cmd = [sys.executable, "bench/ulysses.py", "--shape", "1b", "--measured-tokens-per-s", "1000",
           "--measured-seq-len", "8192", "--seq-len", "65536", "--layouts", "8x1", "--bandwidth-gbs", "100"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2 and "sp=8 must divide the 4 key-value heads" in out.stderr


@pytest.mark.parametrize("shape", ["1b", "7b"])
def test_throughput_shapes_are_valid_overrides(env, shape):
    from tests.test_config import compose_config

    overrides = [*throughput.SHAPES[shape], *throughput.GPU, throughput.ARCH.format("max_position_embeddings", 32768)]
    layers = "22" if shape == "1b" else "32"
    config = compose_config(*overrides)
    assert config.model.arch["num_hidden_layers"] == int(layers) and config.model.arch["vocab_size"] == 32000
    assert config.trainer.precision == "bf16"
    if shape == "1b":
        return  # the command line composes the same way: one process (the 7B shape's) checks it
    out = subprocess.run([sys.executable, "-m", "train.finetune", *overrides, "--cfg", "job"], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "num_hidden_layers: " + layers in out.stdout
    assert "vocab_size: 32000" in out.stdout and "precision: bf16" in out.stdout


def test_gpu_check_dry_run_runs_every_section_on_cpu(env, tmp_path):
    """The GPU check is prepared here and run in short GPU slices: its dry run keeps it working."""
    cmd = [sys.executable, "bench/gpu_check.py", "--dry-run", "--out", str(tmp_path), "--fuse", "always"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = (tmp_path / "gpu_check.md").read_text()
    assert report in out.stdout and "dry run" in report
    for title in ("1. Attention layer", "2. Half-precision parity", "3. ~1B shape", "4. 7B shape", "5. Q'/K'"):
        assert f"## {title}" in report, title
    assert "Failed:" not in report, report
    for row in ("| sdpa | 512 | exact |", "| bf16 | 512 | 32 | slack |", "| exact | torch.compile |"):
        assert row in report, row
    assert "Longest that fits: **" in report and "**none**" not in report


def test_gpu_check_without_a_gpu_asks_for_the_dry_run(env):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    out = subprocess.run([sys.executable, "bench/gpu_check.py"], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 1 and "no GPU here: pass --dry-run" in out.stderr
