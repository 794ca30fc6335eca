"""Kill/resume campaign on the tiny config, runnable outside pytest.

    python benchmarks/faults.py                  # 5 random kill points, random seed
    python benchmarks/faults.py --seed=123 --kills=8 --json=faults.json

1. An uninterrupted reference run: 24 steps, a checkpoint every 4.
2. The same run SIGKILLed at --kills random points (every kind once, among
   them one inside an asynchronous checkpoint write; see
   tests/faults/harness.py), each time restarted; every restart must begin at
   the newest complete checkpoint on disk, and a last restart runs to the end.
3. The final train state (parameters, optimizer state, step, rng, counters,
   data-iterator position) must equal the reference bit for bit.
4. SIGTERM in the middle of an interval: the run must save and exit 0; the
   time from signal to exit is reported.

Each process compiles the step afresh unless --compile-cache is given.
Exit status 0 when everything holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults import harness  # needs the repository on sys.path (above)


def _reference(root: Path, env: dict[str, str]) -> tuple[Path, float]:
    workdir = root / "reference"
    t0 = time.monotonic()
    run = harness.launch(workdir, root / "reference.log", harness.train_args(workdir), env)
    if run.wait(timeout=900) != 0:
        raise SystemExit(f"the reference run failed:\n{run.tail()}")
    return workdir, time.monotonic() - t0


def _sigterm(root: Path, env: dict[str, str]) -> dict[str, object]:
    """SIGTERM once the log shows step 6 (between checkpoints 4 and 8)."""
    workdir = root / "sigterm"
    run = harness.launch(workdir, root / "sigterm.log", harness.train_args(workdir), env)
    while run.last_logged_step() < 6:
        if run.proc.poll() is not None:
            return {"ok": False, "detail": f"ended before SIGTERM:\n{run.tail()}"}
        time.sleep(harness.POLL_S)
    sent = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    rc = run.wait(timeout=300)
    seconds = time.monotonic() - sent
    summary = json.loads((workdir / "summary.json").read_text()) if rc == 0 else {}
    saved = summary.get("step")
    ok = rc == 0 and summary.get("status") == "preempted" and saved == harness.newest_complete(
        workdir)
    return {"ok": ok, "exit_status": rc, "seconds_to_exit": round(seconds, 2),
            "saved_step": saved}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=None, help="default: a random one (printed)")
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--root", type=Path, default=None, help="default: a new temporary directory")
    ap.add_argument("--compile-cache", type=Path, default=None,
                    help="share compiled steps between processes (faster, less independent)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    root = args.root or Path(tempfile.mkdtemp(prefix="tinyllm_faults_"))
    root.mkdir(parents=True, exist_ok=True)
    env = harness.subprocess_env(args.compile_cache)
    print(f"seed {seed}; workdirs under {root}", flush=True)

    reference, ref_s = _reference(root, env)
    print(f"reference run: {ref_s:.1f}s", flush=True)
    rng = random.Random(seed)
    kinds = harness.random_kinds(rng, args.kills)
    campaign = harness.kill_campaign(root / "killed", root / "logs", kinds, rng, env, timeout=900)
    print(campaign.table(), flush=True)
    failures = campaign.failures()
    diffs = []
    if campaign.final_returncode == 0:
        diffs = harness.state_differences(reference / "checkpoints" / str(harness.TOTAL_STEPS),
                                          root / "killed" / "checkpoints" / str(harness.TOTAL_STEPS))
    else:
        diffs = ["no final checkpoint to compare"]
    fired = sum(k.fired for k in campaign.kills)
    ok_kills = sum(k.fired and k.start_ok for k in campaign.kills)
    print(f"kill points: {ok_kills}/{len(kinds)} resumed from the newest complete checkpoint "
          f"({fired} fired); final state {'bitwise equal to' if not diffs else 'DIFFERS from'} "
          f"the uninterrupted run; {campaign.seconds:.0f}s", flush=True)
    for line in failures + diffs[:20]:
        print(f"  FAIL {line}")
    term = _sigterm(root, env)
    print(f"SIGTERM mid-interval: {term}", flush=True)

    result = {
        "seed": seed, "kills": [
            {"point": k.point, "fired": k.fired, "expected_start": k.expected_start,
             "resumed_from": k.resumed_from, "passed_restore": k.passed_restore,
             "killed_after_s": round(k.killed_after_s, 2), "complete_after": k.complete_after}
            for k in campaign.kills],
        "final_resumed_from": campaign.final_resumed_from, "failures": failures,
        "state_differences": diffs, "sigterm": term, "seconds": round(campaign.seconds, 1),
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if not failures and not diffs and term["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
