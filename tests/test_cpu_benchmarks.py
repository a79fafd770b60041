"""Smoke tests of the CPU-speed benchmark scripts (conv_chunk.py, cpu_ab.py): they run end to end,
and the A/B variants really compile different programs. Speed is never asserted here."""

import json

import pytest
from test_benchmarks import run_script


def test_conv_chunk_times_all_three_kernels_per_slice(tmp_path):
    out = tmp_path / "grid.jsonl"
    result = run_script("conv_chunk.py", "--shapes", "4x4x2x3", "--chunks", "2", "--rounds", "1",
                        "--json", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(record["ms"]) == sorted(f"{k}@{c}" for k in ("forward", "input grad", "weight grad")
                                          for c in ("one", "2"))
    assert all(ms > 0 for ms in record["ms"].values())


@pytest.mark.slow  # two LeNet-5 compiles: ~20-60 s on 2 shared cores
def test_cpu_ab_compiles_each_variant_under_its_settings(tmp_path):
    out = tmp_path / "ab.json"
    result = run_script("cpu_ab.py", "--arch", "lenet5", "--batch-size", "8", "--rounds", "1",
                        "--window-seconds", "0.05", "--variants", "whole:batch_chunk=0,sliced:batch_chunk=4",
                        "--json", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    (record,) = json.loads(out.read_text())
    # LeNet-5's 2 convs: forward, input grad (second conv only), weight grad = 5 convolutions; in 2 slices, 10.
    assert record["convolutions"] == {"whole": 5, "sliced": 10}
    assert record["ratio_to_first"]["whole"] == 1.0 and record["images_per_s"]["sliced"] > 0
