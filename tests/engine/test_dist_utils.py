"""Environment detection and single-process behaviour of vlkit.utils.distributed."""
import sys
import types

import pytest
import torch

from vlkit.utils import distributed

LAUNCH_VARS = [
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "SLURM_PROCID",
    "SLURM_NTASKS", "SLURM_LOCALID", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK", "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT",
    "SLURM_JOB_NODELIST", "SLURM_JOB_ID",
]


@pytest.fixture
def clean_env(monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_plain_process_is_rank_zero_of_one(clean_env):
    assert distributed.world_info_from_env() == (0, 0, 1)
    info = distributed.init_distributed("cpu")
    assert (info.rank, info.world_size, info.is_main, info.is_distributed) == (0, 1, True, False)
    assert not distributed.launched_by_launcher()


def test_torchrun_variables_win_over_slurm(clean_env):
    clean_env.setenv("SLURM_PROCID", "5")
    clean_env.setenv("SLURM_NTASKS", "8")
    clean_env.setenv("SLURM_LOCALID", "1")
    assert distributed.world_info_from_env() == (1, 5, 8)
    clean_env.setenv("RANK", "2")
    clean_env.setenv("WORLD_SIZE", "4")
    clean_env.setenv("LOCAL_RANK", "0")
    assert distributed.world_info_from_env() == (0, 2, 4)
    assert distributed.launched_by_launcher()


@pytest.mark.parametrize("nodelist, host", [
    ("gpu[03-05,9],cpu1", "gpu03"), ("node7", "node7"), ("a-b[1,2]", "a-b1"),
])
def test_first_slurm_host(nodelist, host):
    assert distributed.first_slurm_host(nodelist) == host


def test_single_process_collectives_are_identities():
    tensor = torch.tensor([1.0, 3.0])
    assert distributed.all_reduce_sum(tensor.clone()).tolist() == [1.0, 3.0]
    assert distributed.all_reduce_mean(tensor.clone()).tolist() == [1.0, 3.0]
    assert distributed.all_reduce_min(tensor.clone()).tolist() == [1.0, 3.0]
    assert distributed.all_gather_object({"a": 1}) == [{"a": 1}]
    assert distributed.broadcast_object("x") == "x"
    distributed.barrier()


def test_resolve_device_rejects_unknown_names():
    assert distributed.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device='tpu'"):
        distributed.resolve_device("tpu")


def test_current_command_relaunches_a_module_as_a_module(monkeypatch):
    fake_main = types.SimpleNamespace(__spec__=types.SimpleNamespace(name="vlkit.__main__"))
    monkeypatch.setitem(sys.modules, "__main__", fake_main)
    monkeypatch.setattr(sys, "argv", ["/repo/vlkit/__main__.py", "run", "with", "tiny"])
    assert distributed.current_command() == ["-m", "vlkit", "run", "with", "tiny"]


def test_launch_local_refuses_nested_launch_and_bad_counts(clean_env):
    with pytest.raises(ValueError, match="nproc >= 1"):
        distributed.launch_local(0, ["train.py"])
    clean_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="inside a distributed job"):
        distributed.launch_local(2, ["train.py"])
