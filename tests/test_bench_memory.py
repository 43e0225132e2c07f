"""The memory benchmark script runs and writes its CSV and plot."""

from __future__ import annotations

import csv

from ebmm_rl.bench.memory import OPERATIONS, main


def test_memory_benchmark_writes_csv_and_plot(tmp_path):
    out = tmp_path / "bench.csv"
    argv = ["--device", "cpu", "--n", "2", "4", "--batch", "2", "--dim", "8", "--hidden", "8", "--fast-units", "2"]
    main([*argv, "--hops", "1", "--write-steps", "1", "--read-steps", "1", "--repeats", "1", "--threads", "1",
          "--meta-max-patterns", "4", "--out", str(out)])  # fmt: skip
    rows = list(csv.DictReader(out.open()))
    measured = {(int(row["n"]), row["operation"]) for row in rows}
    assert measured == {(n, op) for n in (2, 4) for op in OPERATIONS if n == 2 or not op.startswith("meta")}
    assert all(float(row["mean_s"]) > 0 and int(row["memory_size"]) == 2 * 9 for row in rows)
    assert out.with_suffix(".png").stat().st_size > 0
