"""Numbers the README's and docs/experiments.md's prose quotes are the cells of the published tables
(bench/experiments/*.md, written by train.report): a rerun that changes a cell, or an edit that
changes the prose, fails here until the two agree again."""
from pathlib import Path

import pytest

from tests.runs import REPO

EXPERIMENTS = REPO / "bench" / "experiments"
PROSE = (REPO / "README.md", REPO / "docs" / "experiments.md")

PASSKEY_AGAINST_VANILLA = "Passkey retrieval against passkey_vanilla vanilla (paired"
PASSKEY_AGAINST_VANILLA_NTK = "Passkey retrieval against passkey_vanilla vanilla + dynamic-x4"
PASSKEY_NTK_AGAINST_ITSELF = "Passkey retrieval with RoPE scaling at evaluation against the same model"
SMOLLM2_AGAINST_V = "Change in perplexity against smollm2_vanilla vanilla (paired"
SMOLLM2_AGAINST_C = "Change in perplexity against smollm2_coca slack (paired"

# (the prose as the README or docs/experiments.md has it, table file, the sentence that heads the table or None for the
# file's first table, row, column, what the cell starts with)
CLAIMS = [
    ("The low-frequency conversion costs\n  +1.1% ±0.2 [+0.9, +1.2] ✓", "conversion-in-window.md", "Change in perplexity",
     "conversion_lowfreq slack", "128", "+1.1% ±0.2 [+0.9, +1.2] ✓"),
    ("at 32L it is -53.6% ±6.0 [-58.6, -47.2] ✓", "conversion.md", "Change in perplexity against conversion_vanilla "
     "vanilla (paired", "conversion_lowfreq slack", "4K", "-53.6% ±6.0 [-58.6, -47.2] ✓"),
    ("-9.9% ±3.5 [-13.5, -6.0] ✓", "conversion.md", "Change in perplexity against conversion_vanilla vanilla + "
     "dynamic-x4", "conversion_lowfreq slack", "4K", "-9.9% ±3.5 [-13.5, -6.0] ✓"),
    ("-19.1% ±2.0 [-20.7, -17.0] ✓)", "conversion.md", "Change in perplexity against conversion_vanilla vanilla + "
     "dynamic-x4", "conversion_lowfreq slack + dynamic-x4", "4K", "-19.1% ±2.0 [-20.7, -17.0] ✓"),
    ("not different at 8L (+2.8% ±3.8\n  [-0.9, +7.2])", "conversion.md", "Change in perplexity against "
     "conversion_vanilla vanilla + dynamic-x4", "conversion_lowfreq slack", "1K", "+2.8% ±3.8 [-0.9, +7.2]"),
    ("ppl(32L)/ppl(L) is 2.52x ±0.19 [2.26, 2.82]", "conversion.md", None, "conversion_lowfreq slack",
     "ppl(4K) / ppl(128)", "2.52x ±0.19 [2.26, 2.82]"),
    ("5.47x ±0.51 [4.80, 6.22]", "conversion.md", None, "conversion_vanilla vanilla", "ppl(4K) / ppl(128)",
     "5.47x ±0.51 [4.80, 6.22]"),
    ("CoCA costs +9.4% [+9.3, +9.6]", "conversion-in-window.md", "Change in perplexity", "conversion_kproj_all slack",
     "128", "+9.4% [+9.3, +9.6]"),
    ("with the fitted W_t +4.4%\n  [+4.3, +4.5]", "conversion-in-window.md", "Change in perplexity",
     "conversion_fit slack", "128", "+4.4% [+4.3, +4.5]"),
    ("at 32L slack is -39.6% ±4.9 [-43.3, -34.0] ✓", "extrapolation.md",
     "Change in perplexity against extrapolation_vanilla vanilla (paired", "extrapolation_slack slack", "4K",
     "-39.6% ±4.9 [-43.3, -34.0] ✓"),
    ("exact -46.8% ±1.6 [-48.6, -45.0] ✓", "extrapolation.md",
     "Change in perplexity against extrapolation_vanilla vanilla (paired", "extrapolation_exact exact", "4K",
     "-46.8% ±1.6 [-48.6, -45.0] ✓"),
    ("2.80x ±0.24 [2.47, 3.15] for slack", "extrapolation.md", None, "extrapolation_slack slack",
     "ppl(4K) / ppl(128)", "2.80x ±0.24 [2.47, 3.15]"),
    ("(-15.3% ±4.5\n  [-19.3, -10.8] ✓ at 32L)", "extrapolation.md",
     "Change in perplexity against extrapolation_vanilla vanilla + dynamic-x4", "extrapolation_exact exact + dynamic-x4",
     "4K", "-15.3% ±4.5 [-19.3, -10.8] ✓"),
    ("not at 32L (-7.0% ±7.0 [-14.4, -1.2])", "extrapolation.md",
     "Change in perplexity against extrapolation_vanilla vanilla + dynamic-x4", "extrapolation_slack slack + dynamic-x4",
     "4K", "-7.0% ±7.0 [-14.4, -1.2]"),
    ("slack costs +3.8% ±1.2 [+2.5, +4.7] ✓", "extrapolation-in-window.md", "Change in perplexity",
     "extrapolation_slack slack", "128", "+3.8% ±1.2 [+2.5, +4.7] ✓"),
    ("Exact costs +2.1% ±1.4 [+0.5, +3.1]", "extrapolation-in-window.md", "Change in perplexity",
     "extrapolation_exact exact", "128", "+2.1% ±1.4 [+0.5, +3.1]"),
    ("slack and\nexact cost +6.0% and +5.3% in the window", "quick-extrapolation-in-window.md", "Change in perplexity",
     "extrapolation_slack slack", "128", "+6.0%"),
    ("slack and\nexact cost +6.0% and +5.3% in the window", "quick-extrapolation-in-window.md", "Change in perplexity",
     "extrapolation_exact exact", "128", "+5.3%"),
    ("they cost +1.1% ±0.2 [+0.9, +1.2] in the window", "conversion-in-window.md", "Change in perplexity",
     "conversion_lowfreq slack", "128", "+1.1% ±0.2 [+0.9, +1.2]"),
    ("+0.5% [+0.5, +0.6] ✓ at\n  2,400", "conversion-budget-in-window.md", "Change in perplexity against "
     "conversion_vanilla_x4 vanilla", "conversion_lowfreq_x4 slack", "128", "+0.5% [+0.5, +0.6] ✓"),
    ("-12.3% [-14.6, -10.0] at 32L", "conversion-budget.md", "Change in perplexity against conversion_vanilla_x4 "
     "vanilla + dynamic-x4", "conversion_lowfreq_x4 slack", "4K", "-12.3% [-14.6, -10.0] ✓"),
    ("-23.6% [-24.1, -23.0]", "conversion-budget.md", "Change in perplexity against conversion_vanilla_x4 "
     "vanilla + dynamic-x4", "conversion_lowfreq_x4 slack + dynamic-x4", "4K", "-23.6% [-24.1, -23.0] ✓"),
    ("+13.7% ±2.1\n  [+10.6, +16.1]", "conversion.md", "Change in perplexity against conversion_vanilla vanilla + dynamic-x4", "conversion_lowfreq slack + dynamic-x4", "512",
     "+13.7% ±2.1 [+10.6, +16.1] ✓"),
    ("+5.9% ±1.9 [+3.7, +8.6]", "conversion.md", "Change in perplexity against conversion_vanilla vanilla + dynamic-x4", "conversion_lowfreq slack", "512", "+5.9% ±1.9 [+3.7, +8.6] ✓"),
    ("-14.3% ±2.9 [-17.2, -11.7] ✓ at 2L", "conversion.md", "Change in perplexity against conversion_vanilla vanilla "
     "(paired", "conversion_lowfreq slack", "256", "-14.3% ±2.9 [-17.2, -11.7] ✓"),
    ("7.43x [6.65, 8.28] at 4x", "conversion-budget.md", None, "conversion_vanilla_x4 vanilla", "ppl(4K) / ppl(128)",
     "7.43x [6.65, 8.28]"),
    ("+1.0% [+0.9, +1.2] ✓ in the window against the parent", "conversion-validation.md", "Change in perplexity",
     "conversion_lowfreq slack", "128", "+1.0% [+0.9, +1.2] ✓"),
    ("(slack 16.05 [15.10, 17.06] without it, 18.73\n  [17.65, 19.88] with it)", "extrapolation.md", None,
     "extrapolation_slack slack", "256", "16.05 ±0.21 [15.10, 17.06]"),
    ("(slack 16.05 [15.10, 17.06] without it, 18.73\n  [17.65, 19.88] with it)", "extrapolation.md", None,
     "extrapolation_slack slack + dynamic-x4", "256", "18.73 ±0.64 [17.65, 19.88]"),
    ("(at 2x, 8L without NTK is not different: +0.2% [-1.9, +2.2])", "conversion-budget.md", "Change in perplexity "
     "against conversion_vanilla_x2 vanilla + dynamic-x4", "conversion_lowfreq_x2 slack", "1K", "+0.2% [-1.9, +2.2]"),
    ("at 2L they win without NTK of their own (-4.4% [-5.5, -3.1])", "conversion.md", "Change in perplexity against "
     "conversion_vanilla vanilla + dynamic-x4", "conversion_lowfreq slack", "256", "-4.4% ±1.0 [-5.5, -3.1] ✓"),
    ("and lose with it (+8.8% [+7.1, +10.1])", "conversion.md", "Change in perplexity against "
     "conversion_vanilla vanilla + dynamic-x4", "conversion_lowfreq slack + dynamic-x4", "256", "+8.8% ±1.5 [+7.1, +10.1] ✓"),
    # Experiment 3 (passkey), 2026-12-06: round 2, three seeds.
    ("Vanilla 0.95 [0.91, 0.98] and exact 0.95\n  [0.91, 0.98] (+6/-6 p=1)",
     "passkey.md", None, "passkey_vanilla vanilla", "256", "0.95 [0.91, 0.98]"),
    ("Vanilla 0.95 [0.91, 0.98] and exact 0.95\n  [0.91, 0.98] (+6/-6 p=1)",
     "passkey.md", None, "passkey_exact exact", "256", "0.95 [0.91, 0.98]"),
    ("Vanilla 0.95 [0.91, 0.98] and exact 0.95\n  [0.91, 0.98] (+6/-6 p=1)",
     "passkey.md", PASSKEY_AGAINST_VANILLA, "passkey_exact exact", "256", "+6/-6 p=1"),
    ("slack 0.81 [0.74, 0.87], below vanilla (+5/-26 p=0.00019 ✓)",
     "passkey.md", None, "passkey_slack slack", "256", "0.81 [0.74, 0.87]"),
    ("slack 0.81 [0.74, 0.87], below vanilla (+5/-26 p=0.00019 ✓)",
     "passkey.md", PASSKEY_AGAINST_VANILLA, "passkey_slack slack", "256", "+5/-26 p=0.00019 ✓"),
    ("At 3L/2 exact answers 0.45 [0.37, 0.53] and vanilla\n  0.02 [0.01, 0.06] (+66/-2 p=1.6e-17 ✓",
     "passkey-near-L.md", None, "passkey_exact exact", "384", "0.45 [0.37, 0.53]"),
    ("At 3L/2 exact answers 0.45 [0.37, 0.53] and vanilla\n  0.02 [0.01, 0.06] (+66/-2 p=1.6e-17 ✓",
     "passkey-near-L.md", None, "passkey_vanilla vanilla", "384", "0.02 [0.01, 0.06]"),
    ("At 3L/2 exact answers 0.45 [0.37, 0.53] and vanilla\n  0.02 [0.01, 0.06] (+66/-2 p=1.6e-17 ✓",
     "passkey-near-L.md", PASSKEY_AGAINST_VANILLA, "passkey_exact exact", "384", "+66/-2 p=1.6e-17 ✓"),
    ("it answers 0.45 [0.37, 0.53] against vanilla's\n  0.02 [0.01, 0.06] (+66/-2 p=1.6e-17 ✓",
     "passkey-near-L.md", PASSKEY_AGAINST_VANILLA, "passkey_exact exact", "384", "+66/-2 p=1.6e-17 ✓"),
    ("slack 0.20 [0.14, 0.27] (+30/-3 p=1.4e-06 ✓)",
     "passkey-near-L.md", None, "passkey_slack slack", "384", "0.20 [0.14, 0.27]"),
    ("slack 0.20 [0.14, 0.27] (+30/-3 p=1.4e-06 ✓)",
     "passkey-near-L.md", PASSKEY_AGAINST_VANILLA, "passkey_slack slack", "384", "+30/-3 p=1.4e-06 ✓"),
    ("(+57/-19 p=1.5e-05 ✓)",
     "passkey-near-L.md", PASSKEY_AGAINST_VANILLA, "passkey_exact exact", "320", "+57/-19 p=1.5e-05 ✓"),
    ("0.13 [0.08, 0.19] against vanilla's 0.00\n  (+19/-0 p=3.8e-06 ✓)",
     "passkey.md", None, "passkey_exact exact", "512", "0.13 [0.08, 0.19]"),
    ("0.13 [0.08, 0.19] against vanilla's 0.00\n  (+19/-0 p=3.8e-06 ✓)",
     "passkey.md", PASSKEY_AGAINST_VANILLA, "passkey_exact exact", "512", "+19/-0 p=3.8e-06 ✓"),
    ("at 2L 0.13 [0.08, 0.19]\n  against 0.00 [0.00, 0.02]",
     "passkey.md", None, "passkey_vanilla vanilla", "512", "0.00 [0.00, 0.02]"),
    ("(exact + NTK at 4L, p=0.25 against vanilla)",
     "passkey.md", PASSKEY_AGAINST_VANILLA, "passkey_exact exact + dynamic-x4", "1K", "+3/-0 p=0.25"),
    ("vanilla gains at 5L/4 (+69/-13 ✓) and 3L/2\n  (+71/-1 ✓)",
     "passkey-near-L.md", PASSKEY_NTK_AGAINST_ITSELF, "passkey_vanilla vanilla + dynamic-x4", "320", "+69/-13"),
    ("vanilla gains at 5L/4 (+69/-13 ✓) and 3L/2\n  (+71/-1 ✓)",
     "passkey-near-L.md", PASSKEY_NTK_AGAINST_ITSELF, "passkey_vanilla vanilla + dynamic-x4", "384", "+71/-1"),
    ("exact gains at 2L (+38/-10 p=6.2e-05 ✓, to 0.31 [0.24, 0.39])",
     "passkey.md", PASSKEY_NTK_AGAINST_ITSELF, "passkey_exact exact + dynamic-x4", "512", "+38/-10 p=6.2e-05 ✓"),
    ("exact gains at 2L (+38/-10 p=6.2e-05 ✓, to 0.31 [0.24, 0.39])",
     "passkey.md", None, "passkey_exact exact + dynamic-x4", "512", "0.31 [0.24, 0.39]"),
    ("exact + NTK above vanilla + NTK at 3L/2 (+40/-14 ✓)",
     "passkey-near-L.md", PASSKEY_AGAINST_VANILLA_NTK, "passkey_exact exact + dynamic-x4", "384", "+40/-14"),
    ("and 2L (+46/-2 ✓)",
     "passkey.md", PASSKEY_AGAINST_VANILLA_NTK, "passkey_exact exact + dynamic-x4", "512", "+46/-2"),
    ("(vanilla 0.95, exact\n  0.95, slack 0.84)",
     "passkey-filler.md", None, "passkey_slack slack", "256", "0.84"),
    ("(exact 0.03 [0.01, 0.07] at 2L)",
     "passkey-filler.md", None, "passkey_exact exact", "512", "0.03 [0.01, 0.07]"),
    ("vanilla +1/-1 p=1, slack\n+8/-6 p=0.79, exact +6/-0 p=0.031 ✓",
     "passkey.md", PASSKEY_NTK_AGAINST_ITSELF, "passkey_vanilla vanilla + dynamic-x4", "256", "+1/-1 p=1"),
    ("vanilla +1/-1 p=1, slack\n+8/-6 p=0.79, exact +6/-0 p=0.031 ✓",
     "passkey.md", PASSKEY_NTK_AGAINST_ITSELF, "passkey_slack slack + dynamic-x4", "256", "+8/-6 p=0.79"),
    ("vanilla +1/-1 p=1, slack\n+8/-6 p=0.79, exact +6/-0 p=0.031 ✓",
     "passkey.md", PASSKEY_NTK_AGAINST_ITSELF, "passkey_exact exact + dynamic-x4", "256", "+6/-0 p=0.031 ✓"),
    ("(+4.8% against\n  +9.9% from W_k on validation)", "conversion-validation.md", "Change in perplexity",
     "conversion_fit slack", "128", "+4.8% [+4.5, +5.0] ✓"),
    ("(+4.8% against\n  +9.9% from W_k on validation)", "conversion-validation.md", "Change in perplexity",
     "conversion_kproj_all slack", "128", "+9.9% [+9.5, +10.3] ✓"),
    # Experiment 4 (SmolLM2-135M), 2026-12-06: four arms, one seed.
    ("it does not come back: 2663.65 [2585.67, 2745.14] in the window against 35.20\n  [34.43, 35.97]",
     "smollm2-in-window.md", None, "smollm2_coca slack", "512", "2663.65 [2585.67, 2745.14]"),
    ("it does not come back: 2663.65 [2585.67, 2745.14] in the window against 35.20\n  [34.43, 35.97]",
     "smollm2-in-window.md", None, "smollm2_vanilla vanilla", "512", "35.20 [34.43, 35.97]"),
    ("it comes closest, at 57.13 [55.84,\n  58.49], and still costs +62.3% [+60.3, +64.5] ✓",
     "smollm2-in-window.md", None, "smollm2_fit slack", "512", "57.13 [55.84, 58.49]"),
    ("it comes closest, at 57.13 [55.84,\n  58.49], and still costs +62.3% [+60.3, +64.5] ✓",
     "smollm2-in-window.md", SMOLLM2_AGAINST_V, "smollm2_fit slack", "512", "+62.3% [+60.3, +64.5] ✓"),
    ("the fitted one reads 293.92 [255.37, 338.29] at 8K against\n  24.19 [16.24, 36.03]",
     "smollm2.md", None, "smollm2_fit slack", "8K", "293.92 [255.37, 338.29]"),
    ("the fitted one reads 293.92 [255.37, 338.29] at 8K against\n  24.19 [16.24, 36.03]",
     "smollm2.md", None, "smollm2_vanilla vanilla", "8K", "24.19 [16.24, 36.03]"),
    ("+62.3% [+60.3, +64.5] ✓** against V: F 57.13 [55.84, 58.49], V 35.20 [34.43, 35.97], P 41.31\n[40.39, 42.27], C 2663.65",
     "smollm2-in-window.md", None, "smollm2_parent vanilla", "512", "41.31 [40.39, 42.27]"),
    ("Against C, F is -97.9% [-97.9, -97.8] ✓",
     "smollm2-in-window.md", SMOLLM2_AGAINST_C, "smollm2_fit slack", "512", "-97.9% [-97.9, -97.8] ✓"),
    ("P 33.25 [30.08, 36.15], V 26.56\n  [24.07, 28.88], C 1624.83 [1513.86, 1743.05], F 42.41 [39.82, 45.09]",
     "smollm2-validation.md", None, "smollm2_parent vanilla", "512", "33.25 [30.08, 36.15]"),
    ("P 33.25 [30.08, 36.15], V 26.56\n  [24.07, 28.88], C 1624.83 [1513.86, 1743.05], F 42.41 [39.82, 45.09]",
     "smollm2-validation.md", None, "smollm2_vanilla vanilla", "512", "26.56 [24.07, 28.88]"),
    ("P 33.25 [30.08, 36.15], V 26.56\n  [24.07, 28.88], C 1624.83 [1513.86, 1743.05], F 42.41 [39.82, 45.09]",
     "smollm2-validation.md", None, "smollm2_coca slack", "512", "1624.83 [1513.86, 1743.05]"),
    ("P 33.25 [30.08, 36.15], V 26.56\n  [24.07, 28.88], C 1624.83 [1513.86, 1743.05], F 42.41 [39.82, 45.09]",
     "smollm2-validation.md", None, "smollm2_fit slack", "512", "42.41 [39.82, 45.09]"),
    ("validation perplexity 1624.83 [1513.86, 1743.05] against 26.56 [24.07, 28.88]", "smollm2-validation.md", None,
     "smollm2_coca slack", "512", "1624.83 [1513.86, 1743.05]"),
    ("validation perplexity 1624.83 [1513.86, 1743.05] against 26.56 [24.07, 28.88]", "smollm2-validation.md", None,
     "smollm2_vanilla vanilla", "512", "26.56 [24.07, 28.88]"),
    ("with the fitted W_t it reached 42.41 [39.82, 45.09]", "smollm2-validation.md", None, "smollm2_fit slack", "512",
     "42.41 [39.82, 45.09]"),
    ("(P is +11.2% [+8.0, +14.5] against V)",
     "smollm2.md", SMOLLM2_AGAINST_V, "smollm2_parent vanilla", "8K", "+11.2% [+8.0, +14.5]"),
    ("and C 2647.60 [2621.27, 2674.20]", "smollm2.md", None, "smollm2_coca slack", "8K", "2647.60 [2621.27, 2674.20]"),
    ("(ppl(16K)/ppl(8K) 1.46x [1.42, 1.50]\n  against 2.11x [1.91, 2.33])",
     "smollm2.md", None, "smollm2_fit slack", "ppl(16K) / ppl(8K)", "1.46x [1.42, 1.50]"),
    ("(ppl(16K)/ppl(8K) 1.46x [1.42, 1.50]\n  against 2.11x [1.91, 2.33])",
     "smollm2.md", None, "smollm2_vanilla vanilla", "ppl(16K) / ppl(8K)", "2.11x [1.91, 2.33]"),
    ("with dynamic NTK it falls (0.93x [0.88, 0.99])",
     "smollm2.md", None, "smollm2_fit slack + dynamic-x4", "ppl(16K) / ppl(8K)", "0.93x [0.88, 0.99]"),
    ("V with dynamic NTK reads 27.59 [18.83, 40.43]",
     "smollm2.md", None, "smollm2_vanilla vanilla + dynamic-x4", "16K", "27.59 [18.83, 40.43]"),
    ("with YaRN (factor 2) 27.43 [17.88, 42.09]", "smollm2.md", None, "smollm2_parent vanilla + yarn-x2", "16K",
     "27.43 [17.88, 42.09]"),
    ("F with dynamic NTK 273.56 [252.51, 296.36]", "smollm2.md", None, "smollm2_fit slack + dynamic-x4", "16K",
     "273.56 [252.51, 296.36]"),
    ("P\n  and V find 1 of 2 keys at 2K and 4K, V also at 8K, none at 16K; C and F none at any length",
     "smollm2-passkey.md", None, "smollm2_vanilla vanilla", "8K", "0.50"),
    ("P\n  and V find 1 of 2 keys at 2K and 4K, V also at 8K, none at 16K; C and F none at any length",
     "smollm2-passkey.md", None, "smollm2_fit slack", "2K", "0.00"),
]


def table_after(text: str, heading: str | None) -> list[dict[str, str]]:
    """The rows, as {column: cell}, of the first Markdown table after the line that starts with `heading`."""
    lines = text.splitlines()
    start = 0 if heading is None else next(i for i, line in enumerate(lines) if line.startswith(heading))
    first = next(i for i in range(start, len(lines)) if lines[i].startswith("|"))
    rows = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    header, body = rows[0], rows[2:]
    return [dict(zip(header, row)) for row in body]


@pytest.mark.parametrize("prose, file, heading, row, column, cell", CLAIMS,
                         ids=[f"{c[1]}:{c[3]}:{c[4]}" for c in CLAIMS])
def test_a_number_in_the_prose_is_the_cell_it_quotes(prose, file, heading, row, column, cell):
    assert any(prose in page.read_text() for page in PROSE), f"neither page says {prose!r} any more"
    rows = {r["run"]: r for r in table_after((EXPERIMENTS / file).read_text(), heading)}
    assert rows[row][column].startswith(cell), (file, row, column, rows[row][column])


def test_the_sample_has_the_training_books_the_prose_counts(shared_data):
    import pyarrow.parquet as pq

    books = pq.read_metadata(shared_data / "pg19-sample" / "train.parquet").num_rows
    assert f"at L = 128 on the {books}\n  training books" in (REPO / "docs" / "experiments.md").read_text()
