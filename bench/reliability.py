"""Faults and bad input, measured: ``make reliability`` prints one table of figures.

1. Fuzzing (hypothesis): mutated profiles and locks through ``render``, ``plan``, ``lock --check``,
   and ``verify``'s report options. Each input runs the real command in-process; a Python
   traceback, an undocumented exit code, or an error of more than one line is a finding.
2. ``kill -9`` at random points of a from-scratch build of the small test target (base import,
   each stage, normalize, smoke, verify, tag): afterwards no human tag may name an image that did
   not pass the gate; what the killed run left is counted; the next build must finish with the
   reference image ID, and ``sglbuild gc`` must leave nothing behind.
3. Faults: a wheel changed by one byte after fetch; a file changed in a cached stage image; the
   disk full during fetch (a small tmpfs as the wheelhouse); the registry stopped mid-push; the
   second engine stopped in the middle of a build and of a verify.

Needs the host's engine, nvcc (for the small target's GPU library), root (the tmpfs), and
Debian's docker-registry (installed by ci/registry.sh). RELIABILITY_FUZZ (default 1200) and
RELIABILITY_KILLS (default 12) set the counts; RELIABILITY_PARTS (default "fuzz,kill,faults,engine") the parts. The engine part
brings up the second engine (ci/engine.sh) and stops it mid-build and mid-verify.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from click.testing import CliRunner  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from builder.cli import cli  # noqa: E402
from builder.errors import ExitCode  # noqa: E402
from support import tar_bytes  # noqa: E402  (tests/support.py: the suite's helpers)

CODES = {int(c) for c in ExitCode}
STATE = Path(tempfile.mkdtemp(prefix="sglbuild-reliability-state-"))
os.environ["SGLBUILD_STATE"] = str(STATE)
figures: dict[str, dict[str, int]] = {}
findings: list[str] = []


def row(name: str, **kw: int) -> None:
    figures.setdefault(name, {"inputs": 0, "faults": 0, "tracebacks": 0, "bad_lines": 0, "bad_tags": 0, "leftovers": 0})
    for k, v in kw.items():
        figures[name][k] += v


# -- 1. fuzzing ------------------------------------------------------------------------------------

def run_inprocess(args: list[str], cwd: Path) -> tuple[int, str, str | None]:
    """The command, in this process; its exit code, its stderr, and a traceback if one escaped."""
    runner = CliRunner()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = runner.invoke(cli, args, catch_exceptions=True)
    finally:
        os.chdir(old)
    tb = None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        tb = "".join(traceback.format_exception(type(result.exception), result.exception, result.exception.__traceback__))
    return result.exit_code, result.stderr, tb


def judge(name: str, args: list[str], cwd: Path, what: str) -> None:
    code, err, tb = run_inprocess(args, cwd)
    row(name, inputs=1)
    if tb is not None:
        row(name, tracebacks=1)
        findings.append(f"{name}: traceback for {what}: {tb.strip().splitlines()[-1]}")
    elif code not in CODES:
        findings.append(f"{name}: undocumented exit code {code} for {what}")
        row(name, bad_lines=1)
    elif code != 0:
        errors = [ln for ln in err.splitlines() if ln.startswith("sglbuild: error:")]
        if len(errors) != 1 or len(errors[0]) > 600:
            row(name, bad_lines=1)
            findings.append(f"{name}: {len(errors)} error lines for {what}: {err.strip()[:200]!r}")


def fuzz(project: Path, n: int) -> None:
    profile = (project / "sglbuild.toml").read_text()
    lock_path = next((project / "locks").glob("*.lock.json"))
    lock_text = lock_path.read_text()
    lines = profile.splitlines(keepends=True)
    per = max(1, n // 4)

    edits = st.one_of(
        st.tuples(st.just("delete-line"), st.integers(0, len(lines) - 1), st.just("")),
        st.tuples(st.just("replace-line"), st.integers(0, len(lines) - 1), st.text(max_size=40)),
        st.tuples(st.just("insert"), st.integers(0, len(profile)), st.text(max_size=20)),
        st.tuples(st.just("flip-value"), st.integers(0, len(lines) - 1),
                  st.sampled_from(['""', "0", "[]", "{}", "true", '"tools"', '"../x"', '"sm_1x"', '"\'"', '"$HOME"', '"é"'])),
    )

    def mutate_profile(edit: tuple[str, int, str]) -> str:
        kind, i, text = edit
        if kind == "delete-line":
            return "".join(lines[:i] + lines[i + 1:])
        if kind == "replace-line":
            return "".join(lines[:i] + [text + "\n"] + lines[i + 1:])
        if kind == "insert":
            return profile[:i] + text + profile[i:]
        key, sep, _ = lines[i].partition("=")
        return "".join(lines[:i] + [f"{key}= {text}\n" if sep else lines[i]] + lines[i + 1:])

    # derandomize in the quick mode: the suite runs the same inputs every time (a finding there is a bug, never luck)
    cfg = settings(max_examples=per, deadline=None, database=None, suppress_health_check=list(HealthCheck),
                   derandomize="--quick" in sys.argv)

    @cfg
    @given(edits, st.sampled_from([["render", "-o", "/dev/null"], ["plan", "--json"], ["lock", "--check"]]))
    def profiles(edit, command):
        (project / "sglbuild.toml").write_text(mutate_profile(edit))
        judge("fuzz: profile", command, project, f"{command[0]} after {edit[0]} at {edit[1]}")

    data = json.loads(lock_text)
    paths = [("wheels", 0, "sha256"), ("wheels", 0, "version"), ("wheels", 0, "stage"), ("wheels", 0, "filename"),
             ("platform", "python"), ("platform", "glibc"), ("debian",), ("inputs",), ("version",), ("target",), ("wheels",)]
    values = st.one_of(st.none(), st.integers(), st.text(max_size=30), st.lists(st.integers(), max_size=2), st.just({}))

    def set_path(d, path, value):
        d = json.loads(json.dumps(d))
        cur = d
        for p in path[:-1]:
            cur = cur[p]
        if value == "<delete>":
            cur.pop(path[-1]) if isinstance(cur, dict) else None
        else:
            cur[path[-1]] = value
        return d

    @cfg
    @given(st.sampled_from(paths), st.one_of(values, st.just("<delete>")), st.booleans(), st.integers(0, len(lock_text)),
           st.sampled_from([["lock", "--check"], ["render", "-o", "/dev/null"], ["plan"]]))
    def locks(path, value, raw, cut, command):
        text = lock_text[:cut] if raw else json.dumps(set_path(data, path, value))
        lock_path.write_text(text)
        judge("fuzz: lock", command, project, f"{command[0]} with lock {'cut at ' + str(cut) if raw else path}")

    formats = st.one_of(st.sampled_from(["text", "json", "junit", "markdown"]), st.text(max_size=8))
    archs = st.one_of(st.sampled_from(["sm_120", "sm_90a", "sm_120f", "compute_120"]), st.text(max_size=10))

    @cfg
    @given(formats, archs, st.sampled_from(["auto", "off", "require", "maybe"]), st.text(max_size=12),
           st.sampled_from(["", "malformed", "missing"]))
    def verify_options(fmt, arch, gpu, image, lock_kind):
        args = ["verify", f"sglbuild-test/none:{abs(hash(image)) % 1000}" if image else "", "--format", fmt, "--arch", arch, "--gpu", gpu]
        if lock_kind:
            f = project / "fuzz.lock.json"
            f.write_text("{" if lock_kind == "malformed" else "")
            if lock_kind == "missing":
                f.unlink()
            args += ["--lock", str(f)]
        judge("fuzz: verify options", [a for a in args if a != ""], project, " ".join(args))

    @cfg
    @given(st.lists(st.text(max_size=12), max_size=4), st.sampled_from(["render", "plan", "fetch", "lock", "diff", "archs", "inspect", "doctor"]))
    def arguments(words, command):
        judge("fuzz: arguments", [command, *words], project, f"{command} {words!r}")

    try:
        profiles()
        locks()
        verify_options()
        arguments()
    finally:
        (project / "sglbuild.toml").write_text(profile)
        lock_path.write_text(lock_text)


# -- 2. kill -9 ---------------------------------------------------------------------------------

def sglbuild(project: Path, *args: str, timeout: int = 900, state: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **({"SGLBUILD_STATE": state} if state else {})}
    return subprocess.run([sys.executable, "-m", "builder.cli", *args], cwd=project, env=env, capture_output=True, text=True, timeout=timeout)


def leftovers(client, wheelhouse: Path) -> int:
    from builder.state import scratch_leftovers

    containers = client.containers.list(all=True, filters={"label": "io.sglbuild.managed"})
    images = client.images.list(filters={"label": "io.sglbuild.managed", "dangling": True})
    return len(containers) + len(images) + len(scratch_leftovers(wheelhouse))


# Each kill point, and the line of the build's output that comes just before it: the kill lands a random
# fraction of a second after that line, inside the point's step (or, for the quick ones, just after it).
POINTS = {"base": r"^building ", "system": r"^\s+base\s+built", "torch": r"^\s+system\s+built",
          "kernel": r"^\s+torch\s+built", "app": r"^\s+kernel\s+built", "final": r"^\s+app\s+built",
          "normalize": r"^\s+final\s+built", "smoke": r"^\s+normalize\s", "verify": r"^\s+smoke\s+passed",
          "tag": r"^\s+verify\s+passed\s+environment"}


def kills(project: Path, client, n: int, human: str, reference: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(1758153600)
    for i in range(n):
        point = list(POINTS)[i % len(POINTS)]
        # A state of its own: no earlier pass of the same content lets this build skip smoke and verify.
        state = tempfile.mkdtemp(prefix="sglbuild-reliability-trial-")
        env = {**env, "SGLBUILD_STATE": state}
        try:
            client.images.remove(human, force=True)
        except Exception:  # noqa: BLE001 - not there
            pass
        # The base point bootstraps the base again (--no-cache); the others keep the base and rebuild every stage
        # above it (their images removed), which is the same build from there on, a minute shorter.
        if point == "base":
            args = ["build", "--no-cache"]
        else:
            args = ["build"]
            for stage in json.loads(sglbuild(project, "plan", "--json").stdout)[0]["stages"]:
                try:
                    client.images.remove(stage["tag"], force=True)
                except Exception:  # noqa: BLE001 - not there
                    pass
        proc = subprocess.Popen([sys.executable, "-m", "builder.cli", *args], cwd=project, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seen = ""
        marker = re.compile(POINTS[point])
        for line in proc.stderr:
            seen += line
            if marker.search(line):
                break
        time.sleep(rng.uniform(0.0, 1.0) if point in ("normalize", "smoke", "verify", "tag") else rng.uniform(0.0, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        row("kill -9 during a build", faults=1)
        try:
            tagged = client.images.get(human).id
        except Exception:  # noqa: BLE001 - no tag: nothing moved
            tagged = None
        if tagged is not None and tagged != reference:
            row("kill -9 during a build", bad_tags=1)
            findings.append(f"kill at {point}: {human} names {tagged[:19]}, not the verified {reference[:19]}")
        left = leftovers(client, project / "wheels")
        r = sglbuild(project, "build", "--json", state=state)
        again = json.loads(r.stdout)["image_id"] if r.returncode == 0 else None
        if again != reference:
            findings.append(f"kill at {point}: the next build gave {again} ({r.stderr.strip()[-200:]})")
        gc = sglbuild(project, "gc", state=state)
        after = leftovers(client, project / "wheels")
        row("kill -9 during a build", leftovers=after)
        print(f"  kill at {point:<9} left {left} things; next build {'same ID' if again == reference else 'DIFFERENT'}; "
              f"after gc {after}  ({gc.stdout.splitlines()[0] if gc.stdout else gc.stderr.strip()})", flush=True)


# -- 3. faults ------------------------------------------------------------------------------------

def one_line_error(r: subprocess.CompletedProcess, code: int) -> bool:
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("sglbuild: error:")]
    return r.returncode == code and len(lines) == 1 and "Traceback" not in r.stderr


def faults(project: Path, client, human: str, reference: str) -> None:
    name = "faults"
    # A wheel changed by one byte after fetch: refused before any build step.
    wheel = sorted((project / "wheels").glob("sgltest_app-*.whl"))[0]
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 1
    original = wheel.read_bytes()
    wheel.write_bytes(bytes(data))
    r = sglbuild(project, "build", "--no-cache")
    wheel.write_bytes(original)
    row(name, faults=1, inputs=1)
    if not one_line_error(r, 5) or re.search(r"^\s+\w+\s+building", r.stderr, re.M):  # no step may have started
        findings.append(f"one changed byte: exit {r.returncode}: {r.stderr.strip()[-200:]}")
        row(name, bad_lines=1)
    print(f"  one byte changed in {wheel.name}: exit {r.returncode}: {r.stderr.strip().splitlines()[-1][:150]}", flush=True)

    # A file changed in a cached stage image: noticed, built again, same image ID.
    plan = json.loads(sglbuild(project, "plan", "--json").stdout)[0]
    stage = plan["stages"][-1]
    c = client.containers.create(stage["tag"], ["true"], entrypoint=[])
    c.put_archive("/opt", tar_bytes({"tampered.txt": b"x"}))
    forged = c.commit()
    c.remove(force=True)
    client.api.tag(forged.id, *stage["tag"].rsplit(":", 1))
    r = sglbuild(project, "build")  # the text output, where the warning is
    after = sglbuild(project, "build", "--json")
    row(name, faults=1, inputs=1)
    ok = r.returncode == 0 and "building it again" in r.stderr and json.loads(after.stdout)["image_id"] == reference
    if not ok:
        findings.append(f"tampered stage: not noticed ({r.stderr.strip()[-200:]})")
        row(name, bad_tags=1)
    print(f"  file changed in {stage['tag']}: {'noticed, built again, same image ID' if ok else 'NOT NOTICED'}", flush=True)
    try:
        client.images.remove(forged.id, force=True)  # gone already if the build dropped it with the tag
    except Exception:  # noqa: BLE001
        pass

    # The disk full during fetch: a 1 MiB tmpfs as the wheelhouse; one line, exit 3; then a roomy one resumes.
    mnt = Path(tempfile.mkdtemp(prefix="sglbuild-reliability-fs-"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)]).returncode == 0:
        try:
            r = sglbuild(project, "--wheels", str(mnt), "fetch")
            row(name, faults=1, inputs=1)
            # A .part stays by design (the next fetch resumes it with a range request); nothing else may.
            partial = [p.name for p in mnt.iterdir() if p.name.endswith(".tmp")]
            if not one_line_error(r, 3) or partial:
                findings.append(f"disk full during fetch: exit {r.returncode}, left {partial}: {r.stderr.strip()[-200:]}")
                row(name, bad_lines=1)
            print(f"  disk full during fetch: exit {r.returncode}: {r.stderr.strip().splitlines()[-1][:150]}", flush=True)
            subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
            r = sglbuild(project, "--wheels", str(mnt), "fetch")
            if r.returncode != 0:
                findings.append(f"fetch after the disk was freed: exit {r.returncode}")
            print(f"  the same fetch with room: exit {r.returncode}", flush=True)
        finally:
            subprocess.run(["umount", str(mnt)])
            mnt.rmdir()
    else:
        print("  disk full during fetch: skipped (tmpfs needs root)")

    # The registry stopped mid-push: one line, the network's exit code, no record of a push.
    port = 5000 + random.Random().randint(100, 800)
    reg_dir = Path(tempfile.mkdtemp(prefix="sglbuild-reliability-registry-"))
    out = subprocess.run([str(ROOT / "ci" / "registry.sh"), str(port)], env={**os.environ, "REGISTRY_DIR": str(reg_dir)},
                         capture_output=True, text=True)
    if out.returncode == 0:
        pid = int((reg_dir / "registry.pid").read_text())
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "builder.cli", "push", human, f"{out.stdout.strip()}/reliability/app"],
                                cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=300)
        r = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        row(name, faults=1, inputs=1)
        pushes = json.loads((STATE / "pushes.json").read_text()) if (STATE / "pushes.json").exists() else {}
        if not one_line_error(r, 4) or pushes:
            findings.append(f"registry stopped mid-push: exit {r.returncode}, pushes recorded {len(pushes)}: {stderr.strip()[-200:]}")
            row(name, bad_lines=1)
        print(f"  registry stopped mid-push: exit {r.returncode}: {(stderr.strip().splitlines() or [''])[-1][:150]}", flush=True)
        shutil.rmtree(reg_dir, ignore_errors=True)


# -- 4. at once, and interrupted -------------------------------------------------------------------

def _records(state: str, name: str) -> dict:
    path = Path(state) / name
    return json.loads(path.read_text()) if path.exists() else {}


def concurrency_faults(project: Path, client, human: str, reference: str) -> None:
    """Two builds of one target at once; a build and verify of its image at once; gc while a build runs; a wheel
    truncated after fetch verified it. What must hold: every command ends in success or one line, the image is the
    reference one, no record of the state files is lost, the build's work survives gc."""
    name = "at once"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start(*args: str, state: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "builder.cli", *args], cwd=project, env={**env, "SGLBUILD_STATE": state},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
        out, err = proc.communicate(timeout=1800)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def fresh_stages() -> None:  # every stage above the base built again, so the runs overlap for real
        for stage in json.loads(sglbuild(project, "plan", "--json").stdout)[0]["stages"]:
            try:
                client.images.remove(stage["tag"], force=True)
            except Exception:  # noqa: BLE001 - not there
                pass

    # Two builds of the same target at once, one state directory: both succeed with the reference image, and the
    # state file keeps every stage's record and the gate's.
    state = tempfile.mkdtemp(prefix="sglbuild-reliability-trial-")
    fresh_stages()
    a, b = start("build", "--json", state=state), start("build", "--json", state=state)
    ra, rb = finish(a), finish(b)
    row(name, faults=1, inputs=2)
    ids = {json.loads(r.stdout)["image_id"] if r.returncode == 0 else None for r in (ra, rb)}
    stages = _records(state, "stages.json")
    planned = {s["key"] for s in json.loads(sglbuild(project, "plan", "--json").stdout)[0]["stages"]}
    lost = sorted(planned - set(stages))
    verified_ok = reference in _records(state, "verified.json")
    if ids != {reference} or lost or not verified_ok:
        findings.append(f"two builds at once: images {ids}, stage records lost {lost}, gate recorded {verified_ok}: "
                        f"{(ra.stderr + rb.stderr).strip()[-300:]}")
        row(name, bad_tags=int(ids != {reference}))
    print(f"  two builds at once: exits {ra.returncode}, {rb.returncode}; same image {ids == {reference}}; "
          f"stage records {len(planned) - len(lost)}/{len(planned)}; gate recorded {verified_ok}", flush=True)

    # A build and a verify of the same image at once: the verify's record and the build's are both kept.
    state = tempfile.mkdtemp(prefix="sglbuild-reliability-trial-")
    fresh_stages()
    a, b = start("build", "--json", state=state), start("verify", human, "--gpu", "off", state=state)
    ra, rb = finish(a), finish(b)
    row(name, faults=1, inputs=2)
    kept = reference in _records(state, "verified.json") and len(_records(state, "stages.json")) >= len(planned)
    if ra.returncode != 0 or rb.returncode not in (0, 1) or not kept:
        findings.append(f"build and verify at once: exits {ra.returncode}, {rb.returncode}; records kept {kept}: "
                        f"{(ra.stderr + rb.stderr).strip()[-300:]}")
        row(name, bad_lines=1)
    print(f"  build and verify at once: exits {ra.returncode}, {rb.returncode}; records kept {kept}", flush=True)

    # gc while a build runs: gc refuses in one line (exit 3), the build finishes with the reference image.
    state = tempfile.mkdtemp(prefix="sglbuild-reliability-trial-")
    fresh_stages()
    a = start("build", state=state)
    for line in a.stderr:
        if re.search(r"^\s+\w+\s+building", line):
            break
    gc = sglbuild(project, "gc", state=state)
    rest_out, rest_err = a.communicate(timeout=1800)
    row(name, faults=1, inputs=1)
    tagged = client.images.get(human).id
    if not one_line_error(gc, 3) or a.returncode != 0 or tagged != reference:
        findings.append(f"gc while a build runs: gc exit {gc.returncode} ({gc.stderr.strip()[-150:]}); build exit {a.returncode}; "
                        f"{human} names {tagged[:19]}")
        row(name, bad_lines=1)
    print(f"  gc while a build runs: gc exit {gc.returncode} ({gc.stderr.strip()[:90]}); build exit {a.returncode}, "
          f"same image {tagged == reference}", flush=True)

    # A wheel truncated after fetch verified it: the build refuses it by its hash, no step starts.
    wheel = sorted((project / "wheels").glob("sgltest_app-*.whl"))[0]
    original = wheel.read_bytes()
    wheel.write_bytes(original[: len(original) // 2])
    try:
        r = sglbuild(project, "build", "--no-cache")
    finally:
        wheel.write_bytes(original)
    row(name, faults=1, inputs=1)
    if not one_line_error(r, 5) or re.search(r"^\s+\w+\s+building", r.stderr, re.M):
        findings.append(f"truncated wheel: exit {r.returncode}: {r.stderr.strip()[-200:]}")
        row(name, bad_lines=1)
    print(f"  {wheel.name} truncated: exit {r.returncode}: {(r.stderr.strip().splitlines() or [''])[-1][:150]}", flush=True)


def interrupt_faults(project: Path) -> None:
    """Ctrl-C (SIGINT) during lock and during fetch: the lock file is as before or complete, never half-written; every
    wheel in the wheelhouse is whole (its lock hash) or a resumable .part; the command says one line."""
    from builder.inputs.hashing import sha256_file
    from builder.inputs.lockfile import read_lock_file

    name = "Ctrl-C"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    lock_path = next((project / "locks").glob("*.lock.json"))
    before = lock_path.read_bytes()
    for delay in (0.5, 1.5, 3.0):
        proc = subprocess.Popen([sys.executable, "-m", "builder.cli", "lock", "--update"], cwd=project, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
        row(name, faults=1, inputs=1)
        now = lock_path.read_bytes()
        try:
            json.loads(now)
            whole = True
        except ValueError:
            whole = False
        if not whole or (proc.returncode != 0 and now != before) or "Traceback" in err:
            findings.append(f"Ctrl-C during lock after {delay} s: exit {proc.returncode}, lock whole {whole}, changed {now != before}")
            row(name, bad_lines=1)
        print(f"  Ctrl-C during lock after {delay} s: exit {proc.returncode}; lock {'as before' if now == before else 'complete, new'}; "
              f"{(err.strip().splitlines() or [''])[-1][:110]}", flush=True)
        lock_path.write_bytes(before)
    lock = read_lock_file(lock_path)
    wheels = Path(tempfile.mkdtemp(prefix="sglbuild-reliability-trial-"))
    for delay in (0.3, 1.0):
        proc = subprocess.Popen([sys.executable, "-m", "builder.cli", "--wheels", str(wheels), "fetch"], cwd=project, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
        row(name, faults=1, inputs=1)
        hashes = {w.filename: w.sha256 for closure in lock.locks.values() for w in closure.wheels}
        bad = [p.name for p in wheels.iterdir() if p.suffix == ".whl" and p.name in hashes and sha256_file(p) != hashes[p.name]]
        if bad or "Traceback" in err or (proc.returncode != 0 and len([ln for ln in err.splitlines() if ln.startswith("sglbuild: error:")]) != 1):
            findings.append(f"Ctrl-C during fetch after {delay} s: exit {proc.returncode}, half-written {bad}: {err.strip()[-200:]}")
            row(name, bad_lines=1)
        print(f"  Ctrl-C during fetch after {delay} s: exit {proc.returncode}; half-written wheels {len(bad)}", flush=True)
    r = sglbuild(project, "--wheels", str(wheels), "fetch")
    if r.returncode != 0:
        findings.append(f"fetch after Ctrl-C: exit {r.returncode}: {r.stderr.strip()[-200:]}")
    print(f"  the same fetch again: exit {r.returncode}", flush=True)
    shutil.rmtree(wheels, ignore_errors=True)


SECOND = "unix:///var/lib/sglbuild-engine26/rootfs/run/dsock/docker.sock"


def _statuses(r: subprocess.CompletedProcess) -> dict:
    try:
        return {(c["id"], c.get("arch")): c["status"] for c in json.loads(r.stdout)["checks"]}
    except (ValueError, KeyError):
        return {}


def engine_faults(project: Path) -> None:
    """The second engine (ci/engine.sh) stopped in the middle of a build and of a verify, then started again."""
    name = "engine stopped"
    engine_sh = str(ROOT / "ci" / "engine.sh")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DOCKER_HOST": SECOND}
    if subprocess.run([engine_sh, "up", "containerd"], capture_output=True).returncode != 0:
        print("  engine stopped: skipped (ci/engine.sh could not start the second engine)")
        return
    first = subprocess.run([sys.executable, "-m", "builder.cli", "build", "--json"], cwd=project, env=env, capture_output=True, text=True)
    if first.returncode != 0:
        findings.append(f"engine stopped: the reference build on the second engine failed: {first.stderr.strip()[-200:]}")
        return
    reference = json.loads(first.stdout)["image_id"]
    human = json.loads(first.stdout)["tag"]
    reference_verdict = subprocess.run([sys.executable, "-m", "builder.cli", "verify", human, "--gpu", "off", "--format", "json"],
                                       cwd=project, env=env, capture_output=True, text=True)
    # verify --fresh: the probe runs again (an earlier answer for the same content would need no container to stop).
    for args, when in ((["build", "--no-cache"], re.compile(r"^\s+\w+\s+building")), (["verify", human, "--gpu", "off", "--fresh"], None)):
        proc = subprocess.Popen([sys.executable, "-m", "builder.cli", *args], cwd=project, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if when is not None:
            for line in proc.stderr:
                if when.search(line):
                    break
        else:  # verify: stop the engine once its probe container runs
            import docker as docker_py

            watch = docker_py.DockerClient(base_url=SECOND)
            for _ in range(200):
                if watch.containers.list(filters={"label": "io.sglbuild.managed"}):
                    break
                time.sleep(0.05)
        subprocess.run([engine_sh, "down"], capture_output=True)
        err = proc.stderr.read()
        proc.wait()
        r = subprocess.CompletedProcess(args, proc.returncode, "", err)
        row(name, faults=1, inputs=1)
        if not one_line_error(r, 3):
            row(name, bad_lines=1)
            findings.append(f"engine stopped during {args[0]}: exit {r.returncode}: {err.strip()[-300:]}")
        print(f"  engine stopped during {args[0]}: exit {r.returncode}: {(err.strip().splitlines() or [''])[-1][:150]}", flush=True)
        subprocess.run([engine_sh, "up", "containerd"], capture_output=True, check=True)
        import docker

        client = docker.DockerClient(base_url=SECOND)
        if client.images.get(human).id != reference:
            row(name, bad_tags=1)
            findings.append(f"engine stopped during {args[0]}: {human} moved")
        if args[0] == "verify":  # the engine restarted during the probe: the next verify gives the same verdict
            verdict = subprocess.run([sys.executable, "-m", "builder.cli", "verify", human, "--gpu", "off", "--format", "json"],
                                     cwd=project, env=env, capture_output=True, text=True)
            same = verdict.returncode == reference_verdict.returncode and _statuses(verdict) == _statuses(reference_verdict)
            row(name, inputs=1)
            if not same:
                findings.append(f"engine restarted during a probe: the next verify differs (exit {verdict.returncode}): "
                                f"{verdict.stderr.strip()[-200:]}")
            print(f"  verify after the restart: exit {verdict.returncode}, {'the same verdict' if same else 'ANOTHER verdict'}", flush=True)
        again = subprocess.run([sys.executable, "-m", "builder.cli", "build", "--json"], cwd=project, env=env, capture_output=True, text=True)
        if again.returncode != 0 or json.loads(again.stdout)["image_id"] != reference:
            findings.append(f"engine stopped during {args[0]}: the next build did not give the same image ({again.stderr.strip()[-200:]})")
        subprocess.run([sys.executable, "-m", "builder.cli", "gc"], cwd=project, env=env, capture_output=True)
        left = len(client.containers.list(all=True, filters={"label": "io.sglbuild.managed"})) + \
            len(client.images.list(filters={"label": "io.sglbuild.managed", "dangling": True}))
        row(name, leftovers=left)


def main() -> None:
    import docker

    from support import TEST_IMAGE, small_project, uv_wheel_for  # the suite's small real target and its helpers

    work = Path(tempfile.mkdtemp(prefix="sglbuild-reliability-"))
    uv = uv_wheel_for("x86_64")  # the suite's cache holds each machine's uv wheel: this engine's
    so = _sm120_so(work)
    project, index = small_project(work, uv, so, name="reliability")
    client = docker.from_env()
    human = f"{TEST_IMAGE}:reliability"
    quick = "--quick" in sys.argv  # one small case of each part: the suite runs it so the bench cannot rot unseen
    parts = os.environ.get("RELIABILITY_PARTS", "fuzz,kill,faults,together,interrupt,engine" if not quick else "fuzz,interrupt").split(",")
    try:
        if "fuzz" in parts:
            t0 = time.monotonic()
            fuzz(project, int(os.environ.get("RELIABILITY_FUZZ", "1200" if not quick else "12")))
            print(f"fuzzing: {sum(v['inputs'] for k, v in figures.items() if k.startswith('fuzz'))} inputs "
                  f"in {time.monotonic() - t0:.0f} s", flush=True)
        if "interrupt" in parts:
            interrupt_faults(project)
        if "kill" in parts or "faults" in parts or "together" in parts:
            first = sglbuild(project, "build", "--json")
            assert first.returncode == 0, first.stderr
            reference = json.loads(first.stdout)["image_id"]
            if "kill" in parts:
                kills(project, client, int(os.environ.get("RELIABILITY_KILLS", "12")), human, reference)
            if "faults" in parts:
                faults(project, client, human, reference)
            if "together" in parts:
                concurrency_faults(project, client, human, reference)
        if "engine" in parts:
            engine_faults(project)
    finally:
        index.stop()
        for tag in [t for i in client.images.list() for t in i.tags if t.startswith((human, "sglbuild-test/none"))]:
            client.images.remove(tag, force=True)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(STATE, ignore_errors=True)
        for trial in Path(tempfile.gettempdir()).glob("sglbuild-reliability-trial-*"):
            shutil.rmtree(trial, ignore_errors=True)

    print(f"\n{'':28} {'inputs':>7} {'faults':>7} {'tracebacks':>11} {'bad errors':>11} {'bad tags':>9} {'leftovers':>10}")
    for name, f in figures.items():
        print(f"{name:28} {f['inputs']:>7} {f['faults']:>7} {f['tracebacks']:>11} {f['bad_lines']:>11} {f['bad_tags']:>9} {f['leftovers']:>10}")
    total = {k: sum(f[k] for f in figures.values()) for k in ("inputs", "faults", "tracebacks", "bad_lines", "bad_tags", "leftovers")}
    print(f"{'total':28} {total['inputs']:>7} {total['faults']:>7} {total['tracebacks']:>11} {total['bad_lines']:>11} {total['bad_tags']:>9} {total['leftovers']:>10}")
    for line in findings[:40]:
        print(f"  finding: {line}")
    (ROOT / "out").mkdir(exist_ok=True)
    (ROOT / "out" / "reliability.json").write_text(json.dumps({"figures": figures, "findings": findings}, indent=2))
    sys.exit(1 if findings else 0)


def _sm120_so(work: Path) -> bytes:
    from support import sm120_kernel

    return sm120_kernel()


if __name__ == "__main__":
    main()
