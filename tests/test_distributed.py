"""Multi-process training (jaxcnn.distributed): each process's slot of every batch, when
jax.distributed starts, and whole `jaxcnn train` runs of 2 local CPU processes against 1."""

import csv
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxcnn.run_config import RunConfig
from jaxcnn.cli.train import build_parser, main, resolve
from jaxcnn.config import ConfigError, to_dict
from jaxcnn.distributed import DistributedConfig, cluster_tasks, initialize
from jaxcnn.experiment import recorded_config
from jaxcnn.train.sharding import make_mesh, shard_batch
from test_pipeline import Records, loader

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# SGD, not the default Adam: Adam divides by the root of tiny second moments, which turns the
# float rounding of a different device count (another summation order) into visible steps. And a
# calm learning rate: at 0.05 this run's second epoch is chaotic, and 1 process on 8 devices
# already ends 3e-3 away from 1 device in the training loss (at 0.02, 1e-7), so the comparison
# would measure the trajectory's sensitivity, not the processes.
RUN = ["--arch", "lenet5", "--data", "demo", "--batch-size", "32", "--optimizer", "sgd", "--lr", "0.02",
       "--no-progress"]
COMPARED = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")
LAUNCH_TIMEOUT = 300  # seconds for one multi-process run; a stuck one is killed, never waited on


@pytest.mark.parametrize("train, size", [(True, 37), (False, 37), (False, 40)])
@pytest.mark.parametrize("processes", [2, 4])
def test_the_processes_slots_make_exactly_the_one_process_batches(train, size, processes):
    """Shuffled and augmented (train) or padded (eval: 37 is no whole number of batches), for
    several epochs: process p's batch is rows [p*B/P, (p+1)*B/P) of the 1-process batch."""
    options = dict(train=train, augment="flip" if train else "none")
    whole = loader(Records(size), **options)
    slots = [loader(Records(size), process_index=p, process_count=processes, **options) for p in range(processes)]
    assert {len(slot) for slot in slots} == {len(whole)} and slots[1].local_batch_size == 8 // processes
    for epoch in range(3):
        for batch, *parts in zip(whole.epoch(epoch), *(slot.epoch(epoch) for slot in slots), strict=True):
            for key, value in batch.items():
                np.testing.assert_array_equal(np.concatenate([part[key] for part in parts]), value)


def test_a_batch_that_does_not_split_over_the_processes_is_refused():
    with pytest.raises(ValueError, match="divisible by the process count"):
        loader(Records(20), process_index=0, process_count=3)


def test_global_arrays_pass_through_shard_batch_and_host_rows_are_placed():
    mesh = make_mesh()
    placed = shard_batch({"label": np.arange(4, dtype=np.int32)}, mesh)
    again = shard_batch(placed, mesh)
    assert again["label"] is placed["label"] and placed["label"].shape == (4,)


@pytest.mark.parametrize("values, option", [
    ({"coordinator": "localhost"}, "coordinator"),
    ({"coordinator": "host:99999"}, "coordinator"),
    ({"num_processes": 2, "process_id": 2}, "process_id"),
    ({"num_processes": 0}, "num_processes"),
    ({"mode": "off", "num_processes": 2}, "mode"),
    ({"mode": "slurm"}, "mode"),
])
def test_bad_distributed_options_name_the_option(values, option):
    with pytest.raises(ConfigError) as error:
        RunConfig.from_dict({"distributed": values})
    assert error.value.option == f"distributed.{option}"


SLURM_STEP = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
              "SLURM_LOCALID": "0", "SLURM_STEP_NUM_TASKS": "2"}


@pytest.mark.parametrize("config, environ, wanted", [
    ({}, {}, False),
    ({}, SLURM_STEP, True),  # srun with 2 tasks
    ({}, SLURM_STEP | {"SLURM_STEP_NUM_TASKS": "1"}, False),
    ({}, {k: v for k, v in SLURM_STEP.items() if k != "SLURM_STEP_NUM_TASKS"}, False),  # the sbatch script itself
    ({}, {"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "4"}, True),
    ({"mode": "off"}, SLURM_STEP, False),
    ({"mode": "on"}, {}, True),
    ({"coordinator": "10.0.0.1:1234", "num_processes": 2, "process_id": 0}, {}, True),
])
def test_when_jax_distributed_starts(config, environ, wanted):
    assert DistributedConfig(**config).wanted(environ) is wanted


def test_cluster_tasks_outside_a_cluster_is_one():
    assert cluster_tasks({}) == 1


def test_starting_jax_distributed_after_jax_used_its_devices_is_a_clear_error():
    jax.devices()  # this test process already uses JAX
    with pytest.raises(ConfigError, match="before anything else touches JAX"):
        initialize(DistributedConfig(coordinator="127.0.0.1:1", num_processes=2, process_id=0))


def test_the_multi_process_flags_are_not_recorded_and_may_change_on_resume(tmp_path):
    """They say how one start of the run meets, not what the run is: a stale coordinator must
    never reach a resume or a `--config` of the run's config.json."""
    launched = RunConfig.from_dict({"model": {"arch": "lenet5"}, "data": {"name": "demo"},
                                    "distributed": {"coordinator": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}})
    recorded = recorded_config(launched)
    assert recorded["distributed"] == to_dict(DistributedConfig()) and recorded["data"]["name"] == "demo"
    (tmp_path / "config.json").write_text(json.dumps({"config": recorded}))
    parser, table = build_parser()
    flags = ["--resume", str(tmp_path), "--coordinator", "10.0.0.2:99", "--num-processes", "2", "--process-id", "0"]
    resumed = resolve(parser.parse_args(flags), table)
    assert resumed.distributed == DistributedConfig(coordinator="10.0.0.2:99", num_processes=2, process_id=0)
    assert resolve(parser.parse_args(["--resume", str(tmp_path)]), table).distributed == DistributedConfig()


# --- whole runs of several processes ---------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Launch:
    """`jaxcnn train ARGS` started in `processes` local processes of `devices` CPU devices each,
    meeting on a free localhost port; `wait()` returns each process's output or raises with them."""

    def __init__(self, args: list[str], *, processes: int, devices: int, logs: pathlib.Path):
        env = os.environ | {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu",
                            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        coordinator = f"127.0.0.1:{free_port()}"
        logs.mkdir(parents=True, exist_ok=True)
        self.files = [logs / f"process-{i}.log" for i in range(processes)]
        self.procs = []
        for i, file in enumerate(self.files):
            with open(file, "w") as out:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "jaxcnn", "train", *args, "--coordinator", coordinator,
                     "--num-processes", str(processes), "--process-id", str(i)],
                    stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT))
        self.deadline = time.monotonic() + LAUNCH_TIMEOUT

    def wait(self) -> list[str]:
        """The first process to fail, or the time limit, ends all of them (a process left alone
        would wait for the others in a collective)."""
        try:
            while any(p.poll() is None for p in self.procs) and time.monotonic() < self.deadline:
                if any(p.poll() not in (None, 0) for p in self.procs):
                    break
                time.sleep(0.2)
        finally:
            for p in self.procs:
                if p.poll() is None:
                    p.kill()
                p.wait()
        outputs = [file.read_text() for file in self.files]
        codes = [p.returncode for p in self.procs]
        if codes != [0] * len(codes):
            raise AssertionError("\n".join(f"--- process {i} (exit {code}):\n{out[-3000:]}"
                                           for i, (code, out) in enumerate(zip(codes, outputs))))
        return outputs


def read_metrics(run) -> list[dict]:
    with open(pathlib.Path(run) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def assert_same_run(run, reference):
    """The metrics rows and the tested checkpoints' results agree within 1e-5."""
    rows, expected = read_metrics(run), read_metrics(reference)
    assert [row["epoch"] for row in rows] == [row["epoch"] for row in expected]
    for row, want in zip(rows, expected):
        for name in COMPARED:
            assert float(row[name]) == pytest.approx(float(want[name]), abs=1e-5), (row["epoch"], name)
    results, want = (json.loads((path / "results.json").read_text()) for path in (run, reference))
    for tag in ("best", "last"):
        assert results[tag]["epoch"] == want[tag]["epoch"] and results[tag]["examples"] == want[tag]["examples"]
        for name in ("loss", "accuracy"):
            assert results[tag][name] == pytest.approx(want[tag][name], abs=1e-5), (tag, name)
        assert results[tag]["confusion_matrix"] == want[tag]["confusion_matrix"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The 2-epoch run of one process on one device (in this process) and, meanwhile, the 2-epoch
    runs of 2 processes of 1 device and of 2 processes of 2 devices each. Returns the folder
    holding the runs and name -> the processes' outputs (or the error of the launch)."""
    root = tmp_path_factory.mktemp("distributed")
    launches = {f"2x{devices}": Launch(RUN + ["--epochs", "2", "--out", str(root / f"2x{devices}")], processes=2,
                                       devices=devices, logs=root / f"2x{devices}-logs") for devices in (1, 2)}
    try:
        assert main(RUN + ["--epochs", "2", "--out", str(root / "reference")]) == 0
    finally:
        results = {name: outcome(launched) for name, launched in launches.items()}
    return root, results


def outcome(launched: Launch):
    try:
        return launched.wait()
    except AssertionError as error:
        return error


def finished(runs, name: str) -> tuple[pathlib.Path, list[str]]:
    root, results = runs
    if isinstance(results[name], AssertionError):
        raise results[name]
    return root / name, results[name]


@pytest.mark.parametrize("devices", [1, 2])
def test_two_processes_train_as_one_process(runs, devices):
    run, outputs = finished(runs, f"2x{devices}")
    assert_same_run(run, runs[0] / "reference")
    assert f"{2 * devices} cpu device(s)" in outputs[0] and "Epoch 2/2" in outputs[0]
    assert "Epoch" not in outputs[1]  # the console is process 0's
    assert json.loads((run / "config.json").read_text())["environment"]["processes"] == 2


@pytest.mark.slow
def test_two_processes_resumed_train_as_one_process(runs, tmp_path):
    """One epoch, then `--resume --epochs 2` with the same process count: the 2-epoch run."""
    run = tmp_path / "run"
    Launch(RUN + ["--epochs", "1", "--out", str(run)], processes=2, devices=2, logs=tmp_path / "first").wait()
    outputs = Launch(["--resume", str(run), "--epochs", "2", "--no-progress"], processes=2, devices=2,
                     logs=tmp_path / "resumed").wait()
    assert "Resuming lenet5" in outputs[0]
    assert_same_run(run, runs[0] / "reference")
