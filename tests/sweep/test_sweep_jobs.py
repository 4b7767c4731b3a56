"""A sweep job's own machinery: GPU assignment (blocks of tp_size GPUs, preference by job number,
file-lock leases), the sweep dir it leases under, and what it records when its child process fails."""

from __future__ import annotations

import hashlib
import json
import socket

import pytest
import torch
from filelock import FileLock

from mambapipe.sweep.gpus import gpu_blocks, lease_gpus, preference_order, visible_gpus
from mambapipe.sweep.job import _record_exit, run_isolated_job

EIGHT = [str(i) for i in range(8)]


def test_blocks_are_disjoint_tp_sized_groups():
    assert gpu_blocks(EIGHT, 1) == [[g] for g in EIGHT]
    assert gpu_blocks(EIGHT, 2) == [["0", "1"], ["2", "3"], ["4", "5"], ["6", "7"]]
    assert gpu_blocks(["0", "1", "2"], 2) == [["0", "1"]]  # the odd GPU out stays idle
    assert gpu_blocks(["0"], 2) == [["0"]]  # too few: all of them, the engine will say what is missing


def test_jobs_prefer_their_number_modulo_the_blocks():
    assert preference_order(0, 4) == [0, 1, 2, 3]
    assert preference_order(6, 4) == [2, 3, 0, 1]


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # what torch finds of the listed devices
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5,")
    assert visible_gpus() == ["3", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


def test_listed_gpus_that_torch_does_not_find_are_not_leased(monkeypatch):
    """CUDA_VISIBLE_DEVICES=0,1 on a machine without them: device=auto jobs run on the CPU, and must not queue."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert visible_gpus() == []


def test_a_busy_block_sends_the_job_to_a_free_one(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with lease_gpus(5, 2, tmp_path, visible=EIGHT) as first:  # 5 % 4 -> block 1
        assert first == "2,3"
        with lease_gpus(1, 2, tmp_path, visible=EIGHT) as second:  # block 1 busy -> next free
            assert second == "4,5"
            with lease_gpus(2, 1, tmp_path, visible=EIGHT) as third:  # GPUs 2-5 leased above -> 6
                assert third == "6"
    with lease_gpus(1, 2, tmp_path, visible=EIGHT) as again:  # released on exit
        assert again == "2,3"


def test_a_job_waits_while_every_gpu_is_leased(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setattr("mambapipe.sweep.gpus.POLL_SECONDS", 0.01)
    calls = []

    def sleep_then_free(seconds):
        calls.append(seconds)
        held.release()

    lock_dir = tmp_path / socket.gethostname()
    lock_dir.mkdir()
    held = FileLock(str(lock_dir / "gpu0.lock"))
    held.acquire()
    monkeypatch.setattr("mambapipe.sweep.gpus.time.sleep", sleep_then_free)
    with lease_gpus(0, 1, tmp_path, visible=["0"]) as gpus:
        assert gpus == "0"
    assert calls == [0.01]


def test_a_slurm_task_of_its_own_uses_its_gpus_as_they_are(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    with lease_gpus(3, 1, tmp_path, visible=["0", "1"], own_allocation=True) as gpus:
        assert gpus == "0,1"
    assert not any(tmp_path.iterdir())  # no lease files on the shared filesystem


def test_jobs_sharing_one_slurm_allocation_lease_its_gpus(tmp_path, monkeypatch):
    """A joblib sweep run by sbatch: every job sees the allocation's GPUs, so without leases all would share them."""
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    with lease_gpus(0, 1, tmp_path, visible=["0", "1"]) as first:
        with lease_gpus(1, 1, tmp_path, visible=["0", "1"]) as second:
            assert (first, second) == ("0", "1")


@pytest.mark.parametrize("launcher, own_allocation", [
    ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", True),
    ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", False),
])
def test_only_the_submitit_slurm_launchers_jobs_skip_leases(tmp_path, monkeypatch, launcher, own_allocation):
    from omegaconf import OmegaConf

    class Leased(Exception):
        """Stops the job where it has asked for its GPUs: no child starts."""

    def lease(*args, **kwargs):
        raise Leased(kwargs["own_allocation"])

    monkeypatch.setattr("mambapipe.sweep.job.lease_gpus", lease)
    hydra_cfg = job_hydra_config(tmp_path, 0)
    hydra_cfg.launcher = {"_target_": launcher}
    (tmp_path / "0").mkdir()
    with pytest.raises(Leased) as leased:
        run_isolated_job(OmegaConf.create({"device": "cuda", "tp_size": 1}), hydra_cfg)
    assert leased.value.args == (own_allocation,)


def test_no_gpu_leaves_cuda_visible_devices_alone(tmp_path):
    with lease_gpus(0, 1, tmp_path, visible=[]) as gpus:
        assert gpus is None


@pytest.mark.parametrize("code, child_reason, expected", [
    (-9, None, "job process killed by signal 9"),
    (1, "build: out of memory", "build: out of memory"),
    (3, None, "job process exited with code 3"),
])
def test_job_record_says_why_the_child_failed(tmp_path, code, child_reason, expected):
    (tmp_path / "sweep_job.json").write_text(json.dumps({"job_num": 0, "reason": child_reason}))
    record = _record_exit(tmp_path, code, 1.5)
    assert record["reason"] == expected and record["exit_code"] == code and record["job_num"] == 0


def test_job_record_names_the_run_json_it_accounts_for(tmp_path):
    """So the summary can tell a later rerun by hand (a run.json of another `finished`) from the sweep's own run."""
    assert _record_exit(tmp_path, -9, 1.0)["run_json_finished"] is None  # killed before the runner wrote one
    (tmp_path / "run.json").write_text(json.dumps({"steps": [], "reason": None, "finished": "2026-12-01T10:00:00Z"}))
    assert _record_exit(tmp_path, 0, 1.0)["run_json_finished"] == "2026-12-01T10:00:00Z"


def job_hydra_config(sweep_dir, num: int):
    """The parts of a sweep job's Hydra config that run_isolated_job reads."""
    from omegaconf import OmegaConf

    return OmegaConf.create({"runtime": {"output_dir": str(sweep_dir / str(num))}, "overrides": {"task": ["x=1"]},
                             "job": {"num": num}, "sweep": {"subdir": str(num)}})


def run_job_with_a_bad_config(sweep_dir, num: int = 0) -> dict:
    """The quickest way through run_isolated_job: a config that cannot resolve fails before any child starts."""
    from omegaconf import OmegaConf

    (sweep_dir / str(num)).mkdir(parents=True, exist_ok=True)
    return run_isolated_job(OmegaConf.create({"x": "${missing}"}), job_hydra_config(sweep_dir, num))


def test_a_job_whose_config_cannot_resolve_accounts_for_the_run_json_already_there(tmp_path):
    """A run.json left by an earlier sweep into the same dir must not read as a newer rerun of this job."""
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "run.json").write_text(json.dumps({"steps": [], "reason": None,
                                                         "finished": "2026-12-01T10:00:00Z"}))
    record = run_job_with_a_bad_config(tmp_path)
    assert record["exit_code"] == 1 and record["reason"].startswith("config: ")
    assert record["run_json_finished"] == "2026-12-01T10:00:00Z"


def test_a_job_records_the_multirun_yaml_of_its_sweep(tmp_path):
    """Hydra rewrites multirun.yaml at each multirun start: its digest tells this sweep's job dirs from older ones."""
    multirun_yaml = b"hydra:\n  overrides:\n    task:\n    - x=1,2\n"
    (tmp_path / "multirun.yaml").write_bytes(multirun_yaml)
    record = run_job_with_a_bad_config(tmp_path, 1)
    assert record["multirun_yaml_sha256"] == hashlib.sha256(multirun_yaml).hexdigest()
    (tmp_path / "multirun.yaml").unlink()  # a sweeper that writes none: nothing to record
    assert run_job_with_a_bad_config(tmp_path, 1)["multirun_yaml_sha256"] is None


def test_sweep_dir_is_read_back_from_the_job_output_dir():
    from omegaconf import OmegaConf

    from mambapipe.sweep.job import sweep_dir_of

    hydra_cfg = OmegaConf.create({"runtime": {"output_dir": "/x/multirun/2026-11-29/00-10-00/dtype=bf16/3"},
                                  "sweep": {"subdir": "dtype=bf16/3"}})
    assert sweep_dir_of(hydra_cfg).as_posix() == "/x/multirun/2026-11-29/00-10-00"


def test_child_records_a_crash_outside_the_steps(tmp_path, monkeypatch):
    import io

    from mambapipe.sweep.child import main as child_main

    monkeypatch.setattr("sys.stdin", io.StringIO("{}"))  # a config without cache_dir: the runner crashes
    assert child_main([str(tmp_path), "[]", "[]"]) == 1
    record = json.loads((tmp_path / "sweep_job.json").read_text())
    assert record["reason"].startswith("unexpected KeyError") and isinstance(record["pid"], int)


def _run_dir_full(run_dir) -> str:
    return (f"no space left on device in the run directory {run_dir}: free space there, or set hydra.run.dir "
            "(hydra.sweep.dir for a sweep) to a directory on a disk with room")


def test_a_job_whose_record_finds_the_disk_full_fails_in_one_line_and_the_sweep_goes_on(tmp_path, disk_fills_writing,
                                                                                      capfd):
    """Raised, the error of writing sweep_job.json would stop the sweep in Hydra's traceback: the job fails instead,
    said in one line naming its run dir, and leaves no record half-written."""
    disk_fills_writing("sweep_job.json")
    assert run_job_with_a_bad_config(tmp_path, 3) == {"exit_code": 1, "reason": _run_dir_full(tmp_path / "3")}
    assert capfd.readouterr().err == f"FAILED sweep job 3: {_run_dir_full(tmp_path / '3')}\n"
    assert list((tmp_path / "3").iterdir()) == []


@pytest.mark.parametrize("reason, interrupted, code, said", [
    (None, False, 1, True),  # the run went well but nothing records it: the job fails, said
    ("evaluate: {full}", False, 1, False),  # the runner's FAILED line has said it
    ("build: interrupted", True, 130, False),  # the Ctrl-C is what to report
])
def test_a_child_whose_record_finds_the_disk_full_says_it_once(tmp_path, monkeypatch, disk_fills_writing, capfd,
                                                               reason, interrupted, code, said):
    from mambapipe.pipeline.runner import RunResult
    from mambapipe.sweep import child

    full = _run_dir_full(tmp_path)
    reason = reason and reason.format(full=full)
    monkeypatch.setattr(child, "_run", lambda *args: RunResult([], reason, tmp_path, interrupted))
    disk_fills_writing("sweep_job.json", when=lambda data: b'"reason"' in data)  # the record of how the run went
    assert child.main([str(tmp_path), "[]", "[]"]) == code
    assert capfd.readouterr().err == (f"FAILED {full}\n" if said else "")
    assert json.loads((tmp_path / "sweep_job.json").read_text()).keys() == {"pid"}  # as written before the run


def test_a_child_whose_first_record_finds_the_disk_full_fails_in_one_line(tmp_path, disk_fills_writing, capfd):
    from mambapipe.sweep.child import main as child_main

    disk_fills_writing("sweep_job.json")
    assert child_main([str(tmp_path), "[]", "[]"]) == 1
    assert capfd.readouterr().err == f"FAILED {_run_dir_full(tmp_path)}\n"


def interrupting_to_container(monkeypatch, raises: BaseException):
    """OmegaConf.to_container stopped by a Ctrl-C as it resolves the job's config, raising `raises`, the handler's
    record of the Ctrl-C left. Hydra's list of the overrides, a ListConfig read before, reads as it does."""
    from omegaconf import DictConfig, OmegaConf

    from mambapipe import interrupts

    monkeypatch.setattr(interrupts, "_received", True)
    real_to_container = OmegaConf.to_container

    def to_container(config, *args, **kwargs):
        if isinstance(config, DictConfig):
            raise raises
        return real_to_container(config, *args, **kwargs)
    monkeypatch.setattr(OmegaConf, "to_container", to_container)


def test_a_ctrl_c_that_omegaconf_turns_into_a_config_error_stops_the_sweep(tmp_path, monkeypatch):
    """QA: interrupted, OmegaConf.to_container sometimes raises ConfigKeyError; the sweep went on to job 2 and
    exit 1, the job failed as 'config: ConfigKeyError: ...'."""
    from omegaconf.errors import ConfigKeyError

    dropped = ConfigKeyError("'NoneType' object has no attribute '_invalidate_flags_cache'")
    interrupting_to_container(monkeypatch, dropped)
    with pytest.raises(KeyboardInterrupt):
        run_job_with_a_bad_config(tmp_path)
    record = json.loads((tmp_path / "0" / "sweep_job.json").read_text())
    assert (record["exit_code"], record["reason"]) == (130, "interrupted")


def test_a_ctrl_c_before_the_child_started_records_the_job_as_interrupted(tmp_path, monkeypatch):
    """Not 'no run.json: the job did not finish (killed, or still running)': the sweep knows it stopped the job."""
    interrupting_to_container(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run_job_with_a_bad_config(tmp_path)
    record = json.loads((tmp_path / "0" / "sweep_job.json").read_text())
    assert (record["exit_code"], record["reason"]) == (130, "interrupted")


def test_a_config_that_cannot_resolve_without_a_ctrl_c_is_the_jobs_failure(tmp_path, monkeypatch):
    from mambapipe import interrupts

    monkeypatch.setattr(interrupts, "_received", False)
    record = run_job_with_a_bad_config(tmp_path)
    assert record["exit_code"] == 1 and record["reason"].startswith("config: InterpolationKeyError")


CHILD_REPORTS_ITS_SIGINT_MASK = ("import signal; "
                                 "print('blocked:', signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []))")


def test_the_child_starts_with_sigint_blocked_and_a_ctrl_c_meanwhile_is_the_jobs(monkeypatch, capfd):
    """Blocked, a Ctrl-C during the child's start-up waits for it to be able to report one; the job's own Ctrl-C,
    sent as Popen returns, is taken off for it to wait for the child rather than raised there."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    from mambapipe.sweep import job

    real_popen = subprocess.Popen

    def popen_then_ctrl_c(*args, **kwargs):
        child = real_popen(*args, **kwargs)
        # To this thread, as to the sweep's single-threaded process (pytest-xdist's has others); pending, as blocked.
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        return child
    monkeypatch.setattr(subprocess, "Popen", popen_then_ctrl_c)
    heard = []
    previous = signal.signal(signal.SIGINT, lambda *args: heard.append("SIGINT"))
    try:
        child, interrupted = job._start_child([sys.executable, "-c", CHILD_REPORTS_ITS_SIGINT_MASK], dict(os.environ),
                                              "config: yaml\n")
        assert child.wait(timeout=60) == 0
    finally:
        signal.signal(signal.SIGINT, previous)
    assert interrupted and heard == [] and signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert capfd.readouterr().out == "blocked: True\n"
