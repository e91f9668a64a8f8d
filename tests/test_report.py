"""`python -m train.report`: the README's tables come from eval.json files, never by hand."""
import pytest

from tests.test_evaluate import fake_results
from train.evaluation.report import write_results
from train.report import main as report_main


def _write(tmp_path, label, ppl, accuracy=(1.0, 0.5), rope=None):
    results = fake_results(label, ppl)
    if rope:
        results["model"]["rope_parameters"] = {"rope_type": "dynamic", "factor": 4.0}
    for row, value in zip(results["passkey"]["by_length"], accuracy):
        row["accuracy"] = value
    return str(write_results(results, tmp_path / label.replace(" ", "_")))


def test_table_has_every_length_the_ratio_and_the_change_against_a_baseline(tmp_path, capsys):
    vanilla = _write(tmp_path, "vanilla", [10.0, 20.0, float("inf")])
    coca = _write(tmp_path, "coca", [10.5, 12.0, 21.0])
    ntk = _write(tmp_path, "coca ntk", [10.5, 11.0, 12.6], rope=True)
    out = tmp_path / "tables.md"
    report_main([vanilla, coca, ntk, "--against", "vanilla", "--out", str(out)])
    printed = capsys.readouterr().out
    assert printed == out.read_text()
    assert "| run | RoPE at eval | 512 | 1K | 2K | ppl(2K) / ppl(512) | 512 vs vanilla |" in printed
    assert "| vanilla | - | 10.00 | 20.00 | inf | inf | +0.0% |" in printed
    assert "| coca | - | 10.50 | 12.00 | 21.00 | 2.00x | +5.0% |" in printed
    assert "| coca ntk | dynamic x4 | 10.50 | 11.00 | 12.60 | 1.20x | +5.0% |" in printed
    assert "Passkey accuracy (2 cases per length)" in printed
    assert "| coca | - | 1.00 | 0.50 |" in printed


def test_no_passkey_table_of_zeros(tmp_path, capsys):
    runs = [_write(tmp_path, name, [10.0, 11.0, 12.0], accuracy=(0.0, 0.0)) for name in ("a", "b")]
    report_main(runs)
    printed = capsys.readouterr().out
    assert "no run retrieves a single key even at 512 tokens (2 cases per length), so it is left out" in printed
    assert "Passkey accuracy" not in printed


@pytest.mark.parametrize("args, message", [
    (["--against", "nobody"], "--against 'nobody' is none of the runs"),
    (["missing.json"], "missing.json does not exist"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, capsys, args, message):
    run = _write(tmp_path, "a", [10.0, 11.0, 12.0])
    with pytest.raises(SystemExit) as exit_info:
        report_main([run, *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_readme_results_are_the_report_commands_tables_unedited():
    """bench/experiments/*.md are train.report's output for the published runs; the README
    shows them as they are, so a hand edit of either one fails here."""
    from tests.runs import REPO

    readme = (REPO / "README.md").read_text()
    for name in ("extrapolation", "conversion", "quick-extrapolation"):
        table = (REPO / "bench" / "experiments" / f"{name}.md").read_text().strip()
        assert table.startswith("| run | RoPE at eval |") and table in readme, name
