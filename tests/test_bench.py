"""The benchmarks' own arithmetic and command lines (their measurements live in bench/RESULTS.md)."""
import math
import subprocess
import sys

import pytest

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
    overrides = [*throughput.SHAPES[shape], *throughput.GPU, throughput.ARCH.format("max_position_embeddings", 32768)]
    out = subprocess.run([sys.executable, "-m", "train.finetune", *overrides, "--cfg", "job"], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "num_hidden_layers: " + ("22" if shape == "1b" else "32") in out.stdout
    assert "vocab_size: 32000" in out.stdout and "precision: bf16" in out.stdout
