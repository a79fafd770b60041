"""Smoke tests of the benchmark scripts: they run end to end and report complete, positive figures.

Speed itself is never asserted here (benchmarks/README.md holds the measurements).
"""

import json
import math
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCHMARKS = REPO_ROOT / "benchmarks"
POSITIVE = ("compile_s", "step_s", "images_per_s", "flops_per_image", "tflops_per_s", "xla_memory_bytes",
            "peak_memory_bytes", "speedup", "efficiency")


def run_script(name: str, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / name), *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=REPO_ROOT)


def test_throughput_records_one_and_two_fake_devices(tmp_path):
    out = tmp_path / "records.json"
    result = run_script("throughput.py", "--arch", "lenet5", "--image-size", "28", "--batch-size", "4",
                        "--devices", "1,2", "--steps", "2", "--windows", "2", "--warmup", "0", "--json", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    records = json.loads(out.read_text())
    assert [(r["devices"], r["global_batch"]) for r in records] == [(1, 4), (2, 8)]
    for record in records:
        assert "error" not in record
        assert record["arch"] == "lenet5" and record["mode"] == "train" and record["image_size"] == 28
        assert record["device_count"] == record["devices"] == record["visible_devices"]
        assert record["jax"] and record["jaxlib"] and record["device_kind"] and record["platform"] == "cpu"
        assert record["mfu"] is None  # no known peak for a CPU
        assert len(record["window_images_per_s"]) == record["windows"] == 2
        for key in POSITIVE:
            assert isinstance(record[key], (int, float)) and record[key] > 0 and math.isfinite(record[key]), key
    assert records[0]["speedup"] == 1.0
    # The same program per image on 1 and 2 devices: XLA counts one device's share of the work.
    assert records[1]["flops_per_image"] == pytest.approx(records[0]["flops_per_image"], rel=0.05)
    assert "lenet5" in result.stdout and "img/s" in result.stdout


def test_throughput_rejects_unknown_architecture():
    result = run_script("throughput.py", "--arch", "resnet9000")
    assert result.returncode != 0 and "resnet9000" in result.stderr and "resnet20" in result.stderr


def test_compare_torch_reports_ratios(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "torch.json"
    result = run_script("compare_torch.py", "--arch", "lenet5", "--image-size", "28", "--batch-size", "4",
                        "--rounds", "2", "--window-seconds", "0.05", "--settle-seconds", "0", "--xla",
                        "--json", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    (record,) = json.loads(out.read_text())
    assert set(record["images_per_s"]) == {"jaxcnn", "jaxcnn xla", "torch eager", "torch channels_last"}
    assert record["jaxcnn_over_xla"] > 0 and record["environment"]["cpu_convolutions"].startswith("onednn")
    assert all(rate > 0 for rate in record["images_per_s"].values())
    assert record["ratio_vs_torch_eager"] > 0 and record["ratio_vs_torch_channels_last"] > 0


@pytest.mark.slow  # ~5-13 s; the frozen step itself is tested in test_freeze.py and test_finetune_run.py
def test_freeze_step_times_the_frozen_and_the_full_step(tmp_path):
    out = tmp_path / "freeze.json"
    result = run_script("freeze_step.py", "--arch", "lenet5", "--image-size", "32", "--batch", "2",
                        "--rounds", "2", "--steps", "1", "--json", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(out.read_text())
    assert set(record["median_seconds_per_step"]) == {"frozen", "full"}
    assert all(len(times) == 2 and min(times) > 0 for times in record["seconds_per_step"].values())
    assert "frozen" in result.stdout and "s/step" in result.stdout


def test_batch_size_auto_in_the_benchmarks_reports_its_fit_and_trains_at_it(tmp_path):
    result = run_script("batch_size.py", "--arch", "lenet5", "--image-size", "28", "--channels", "1",
                        "--budget-gib", "0.02", "--cap", "4096")
    assert result.returncode == 0, result.stderr[-2000:]
    row = next(line.split() for line in result.stdout.splitlines() if line.strip().startswith("lenet5"))
    per_device, estimate, measured = int(row[1]), float(row[2]), float(row[3])
    assert per_device % 8 == 0 and per_device > 16 and 0 < measured <= 0.02 and estimate > 0 and row[-1] == "memory"
    out = tmp_path / "records.json"
    result = run_script("throughput.py", "--arch", "lenet5", "--image-size", "28", "--batch-size", "auto",
                        "--steps", "1", "--windows", "1", "--warmup", "0", "--json", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    (record,) = json.loads(out.read_text())
    assert record["per_device_batch"] == 128 and "error" not in record  # the CPU cap


@pytest.mark.slow  # ~25 s on 2 loaded cores: a second LeNet-5 compile for the uint8 batches
def test_throughput_feeds_the_device_resident_pipeline(tmp_path):
    out = tmp_path / "records.json"
    result = run_script("throughput.py", "--arch", "lenet5", "--image-size", "28", "--batch-size", "8",
                        "--pipeline", "device", "--data", "demo", "--cache", "--steps", "2", "--windows", "2",
                        "--warmup", "0", "--json", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    (record,) = json.loads(out.read_text())
    assert "error" not in record, record.get("error")
    assert record["mode"] == "pipeline" and record["pipeline"] == "device"
    assert record["images_per_s"] > 0 and record["step_images_per_s"] > 0 and record["pipeline_ratio"] > 0


def test_throughput_writes_each_configuration_as_soon_as_it_is_measured(tmp_path):
    """A benchmark stopped after its first configuration keeps that configuration's record."""
    import os
    import signal

    out = tmp_path / "records.json"
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "throughput.py"), "--arch", "lenet5,resnet20",
               "--image-size", "28", "--batch-size", "4", "--steps", "1", "--windows", "1", "--warmup", "0",
               "--json", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True, cwd=REPO_ROOT,
                               env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        first = next(line for line in process.stdout if "img/s" in line or "FAILED" in line)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert "lenet5" in first
    records = json.loads(out.read_text())
    assert records[0]["arch"] == "lenet5" and records[0]["images_per_s"] > 0 and records[0]["speedup"] == 1.0
