"""The ``sglbuild`` command: a thin click layer over profile -> lock -> wheelhouse -> render -> build."""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import click

from . import __version__
from .errors import CheckFailed, InputError, Interrupted, LockError, SglbuildError
from .lock import check_lock, lock_changes, lock_path, read_lock, write_lock
from .profile import DEFAULT_PROFILE, Profile, load_profile
from .serve import PRESETS
from .ui import Reporter

# Each command imports the steps it runs: `sglbuild archs FILE` should not pay for docker-py,
# and `sglbuild lock --check` not for the SBOM library.

def _fail(message: str, code: int) -> None:
    click.echo(f"sglbuild: error: {message}", err=True)
    sys.exit(code)


def handled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Expected failures become one line and their exit code; bugs keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SglbuildError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted; nothing was tagged", Interrupted.exit_code)

    return wrapper


class Context:
    def __init__(self, profile_path: str, wheels: str | None) -> None:
        self.profile_path = profile_path
        self.wheels_opt = wheels

    @functools.cached_property
    def profile(self) -> Profile:
        return load_profile(self.profile_path)

    @property
    def wheelhouse(self) -> Path:
        return Path(self.wheels_opt) if self.wheels_opt else self.profile.root / "wheels"


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sglbuild")
@click.option("--profile", "profile_path", default=DEFAULT_PROFILE, show_default=True, help="Profile declaring the image targets.")
@click.option("--wheels", default=None, help="Wheelhouse directory [default: wheels/ beside the profile].")
@click.pass_context
def cli(ctx: click.Context, profile_path: str, wheels: str | None) -> None:
    """Build reproducible, verified SGLang images for NVIDIA Blackwell (sm_120) GPUs."""
    ctx.obj = Context(profile_path, wheels)


@cli.command()
@click.argument("target", required=False)
@click.option("--check", is_flag=True, help="Only check that the lock matches the profile; change nothing.")
@click.option("--update", is_flag=True, help="Re-resolve even if the lock is up to date: move pins forward within the profile.")
@pass_ctx
@handled
def lock(ctx: Context, target: str | None, check: bool, update: bool) -> None:
    """Resolve every input of TARGET for the image's platform and write its lock file.

    An up-to-date lock is kept as it is (no network); --update moves every pin to the
    newest the profile allows (newest nightly of a channel, newest release in a range)
    and prints what changed. A failed resolution leaves the old lock untouched.
    """
    from .resolve import resolve

    t = ctx.profile.target(target)
    if check:
        lk = check_lock(ctx.profile, t)
        click.echo(f"{lock_path(ctx.profile, t)}: up to date ({len(lk.wheels)} wheels, {len(lk.debian)} Debian packages)")
        return
    try:
        old = read_lock(ctx.profile, t)
    except LockError:
        old = None
    if old is not None and not update and old.inputs == t.inputs_digest():
        click.echo(f"{lock_path(ctx.profile, t)}: up to date (sglbuild lock --update moves the pins forward)")
        return
    click.echo(f"resolving {t.name} for the image's platform (linux x86_64, its CPython, manylinux) ...", err=True)
    new = resolve(ctx.profile, t, ctx.wheelhouse)
    path = write_lock(ctx.profile, t, new)
    changes = lock_changes(old, new)
    for line in changes:
        click.echo(f"  {line}")
    state = "written" if changes else "no pin moved"
    click.echo(f"{path}: {state}: {len(new.wheels)} wheels, {len(new.debian)} Debian packages, "
               f"Python {new.platform.python}, glibc {new.platform.glibc}, sha256:{new.digest[:16]}")


@cli.command()
@click.argument("target", required=False)
@click.option("--jobs", "-j", default=4, show_default=True, help="Parallel downloads.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@pass_ctx
@handled
def fetch(ctx: Context, target: str | None, jobs: int, quiet: bool) -> None:
    """Fill the wheelhouse from TARGET's lock (parallel, resumable, sha256-verified)."""
    from .wheelhouse import fetch as run_fetch

    t = ctx.profile.target(target)
    lk = check_lock(ctx.profile, t)
    result = run_fetch(lk, ctx.wheelhouse, Reporter(quiet=quiet), jobs=jobs)
    click.echo(f"{ctx.wheelhouse}: {len(result.present) + len(result.downloaded)} of {len(lk.wheels)} wheels verified "
               f"({len(result.downloaded)} downloaded, {result.bytes / 1e6:.0f} MB)")


@cli.command()
@click.argument("target", required=False)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write the Dockerfile here.")
@pass_ctx
@handled
def render(ctx: Context, target: str | None, output: str | None) -> None:
    """Render TARGET's multi-stage Dockerfile from the profile and its lock."""
    from .base import base_ref
    from .engine import git_revision
    from .render import render as render_dockerfile
    from .render import stage_specs

    t = ctx.profile.target(target)
    lk = check_lock(ctx.profile, t)
    text = render_dockerfile(t, lk, stage_specs(t, lk, base_ref(t, lk)), git_revision(ctx.profile.root))
    if output:
        Path(output).write_text(text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


@cli.command()
@click.argument("target", required=False)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@click.option("--json", "json_mode", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--verbose", "-v", is_flag=True, help="Stream the engine's build output.")
@click.option("--no-cache", is_flag=True, help="Rebuild the base and every stage from scratch (no stage or engine cache).")
@click.option("--check-reproducible", is_flag=True, help="Build twice from scratch and compare, layer by layer; tag nothing.")
@pass_ctx
@handled
def build(ctx: Context, target: str | None, quiet: bool, json_mode: bool, verbose: bool, no_cache: bool,
          check_reproducible: bool) -> None:
    """Build TARGET's stages (reusing unchanged ones), verify the image, then tag it."""
    from .build import build as run_build
    from .engine import connect
    from .repro import check_reproducible as run_repro_check
    from .repro import repro_text

    t = ctx.profile.target(target)
    lk = check_lock(ctx.profile, t)
    client = connect()
    reporter = Reporter(quiet=quiet, json_mode=json_mode)
    if check_reproducible:
        report = run_repro_check(ctx.profile, t, lk, ctx.wheelhouse, reporter, client)
        click.echo(json.dumps(report, indent=2) if json_mode else repro_text(report), nl=False)
        if not report["identical"]:
            raise CheckFailed(f"{t.name} is not reproducible: two builds from scratch differ", "see the files listed above")
        return
    reporter.info(f"building {t.name} (lock sha256:{lk.digest[:16]})")
    result = run_build(ctx.profile, t, lk, ctx.wheelhouse, reporter, client, verbose=verbose, fresh=no_cache)
    reporter.emit(asdict(result))
    reporter.info(f"{result.tag}  {result.image_id[:19]}  {result.size / 1e9:.2f} GB  {result.seconds:.1f} s")


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--arch", "target_arch", default=None, help="Also say how a GPU of this architecture runs each file (e.g. sm_120).")
@click.option("--json", "json_mode", is_flag=True, help="Print JSON instead of a table.")
@handled
def archs(paths: tuple[str, ...], target_arch: str | None, json_mode: bool) -> None:
    """List the SASS and PTX architectures in .so files, wheels, trees or docker://IMAGE."""
    from .archs import scan as scan_archs
    from .engine import connect
    from .fatbin import verdict as gpu_verdict

    codes = scan_archs(list(paths), connect)
    rows = [{**c.to_dict(), **({"verdict": gpu_verdict(c, target_arch)} if target_arch else {})} for c in codes]
    if json_mode:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max([len(c.path) for c in codes] + [4])
    click.echo(f"{'file':<{width}}  {'SASS':<40}  {'PTX':<16}" + (f"  on {target_arch}" if target_arch else ""))
    for row in rows:
        if row["sass"] or row["ptx"]:
            line = f"{row['path']:<{width}}  {' '.join(row['sass']) or '-':<40}  {' '.join(row['ptx']) or '-':<16}"
            click.echo(line + (f"  {row['verdict']}" if target_arch else ""))
        else:
            click.echo(f"{row['path']:<{width}}  no GPU code")


@cli.command()
@click.argument("image")
@click.option("--arch", "target_arch", default=None, help="Target architecture [default: the image's io.sglbuild.gpu-arch label].")
@click.option("--gpu", type=click.Choice(["auto", "require", "off"]), default="auto", show_default=True,
              help="GPU checks: when a GPU is there, always (fail without one), or never.")
@click.option("--model", default=None, help="Model path or Hugging Face ID for the serving check (needs a GPU).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "junit"]), default="text", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="Write the report here too.")
@pass_ctx
@handled
def verify(ctx: Context, image: str, target_arch: str | None, gpu: str, model: str | None, fmt: str, output: str | None) -> None:
    """Check that IMAGE can serve on its GPU architecture (static checks; GPU checks when a GPU is there)."""
    from .engine import connect
    from .registry import record_verified
    from .verify import VerifyFailed
    from .verify import verify as run_verify

    client = connect()
    report = run_verify(client, image, target_arch=target_arch, gpu=gpu, model=model, repo_lock=_repo_lock(ctx, client, image))
    text = {"text": report.text, "junit": report.junit, "json": lambda: json.dumps(report.to_dict(), indent=2) + "\n"}[fmt]()
    click.echo(text, nl=False)
    if output:
        Path(output).write_text(text)
    if not report.passed:
        failed = [c.name for c in report.checks if c.status == "fail"]
        raise VerifyFailed(f"{image} failed {len(failed)} check(s): {', '.join(failed)}")
    record_verified(report.image_id, gpu_checked=any(c.id == "gpu-compute" and c.status == "pass" for c in report.checks))


@cli.command()
@click.argument("image_a")
@click.argument("image_b")
@click.option("--semantic", is_flag=True, help="Ignore timestamps: compare content, mode, owner and presence.")
@click.option("--json", "json_mode", is_flag=True, help="Print JSON.")
@handled
def diff(image_a: str, image_b: str, semantic: bool, json_mode: bool) -> None:
    """Compare two images layer by layer and file by file."""
    from .engine import connect
    from .layers import diff_images, diff_text

    diffs = diff_images(connect(), image_a, image_b, semantic)
    if json_mode:
        click.echo(json.dumps([{**asdict(d), "identical": d.identical} for d in diffs], indent=2))
    else:
        click.echo(diff_text(diffs, semantic), nl=False)
    if any(d.files or (not d.identical and not semantic) for d in diffs):
        sys.exit(1)


@cli.command()
@click.argument("image")
@click.option("--write-lock", type=click.Path(dir_okay=False), help="Write the lock the image was built from here.")
@click.option("--write-sbom", type=click.Path(dir_okay=False), help="Write the image's CycloneDX SBOM here.")
@handled
def inspect(image: str, write_lock: str | None, write_sbom: str | None) -> None:
    """Say how IMAGE was built; write its lock (to rebuild it) or SBOM back out."""
    from .engine import connect
    from .inspect import inspect_image

    info = inspect_image(connect(), image)
    click.echo(info.text(), nl=False)
    for path, member in ((write_lock, "lock.json"), (write_sbom, "sbom.cdx.json")):
        if path:
            Path(path).write_text(info.files[member])
            click.echo(f"wrote {path}", err=True)


@cli.command()
@click.argument("image")
@click.argument("repo")
@click.option("--force", is_flag=True, help="Push even if the image has not passed verify here.")
@handled
def push(image: str, repo: str, force: bool) -> None:
    """Push IMAGE to REPO; print (and record) REPO@sha256:DIGEST."""
    from .engine import connect
    from .registry import push as push_image

    result = push_image(connect(), image, repo, force)
    click.echo(f"pushed {result['tag']}", err=True)
    click.echo(result["ref"])


@cli.command()
@click.argument("ref")
@click.argument("tag")
@click.option("--require-gpu", is_flag=True, help="Only if the image passed verify with --gpu require.")
@handled
def promote(ref: str, tag: str, require_gpu: bool) -> None:
    """Move REPO:TAG in the registry to REF (REPO@sha256:...), once REF has passed verify."""
    from .engine import connect
    from .registry import promote as promote_image

    result = promote_image(connect(), ref, tag, require_gpu)
    click.echo(f"{result['tag']} -> {result['ref']}")


@cli.command()
@click.argument("image_or_target", required=False)
@click.option("--model", default=None, help="Hugging Face ID or local directory [default: the preset's model].")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None, help="The field report's settings for a model.")
@click.option("--port", type=int, default=None, help="Host port [default: the preset's, else 30000].")
@click.option("--dry-run", is_flag=True, help="Check the flags with the image's SGLang and print the docker run command.")
@pass_ctx
@handled
def serve(ctx: Context, image_or_target: str | None, model: str | None, preset: str | None, port: int | None, dry_run: bool) -> None:
    """Serve a model from an image (or a target's image) with flags its SGLang accepts."""
    from .engine import connect
    from .serve import check_flags, dry_run_text, port_free, require_gpu
    from .serve import plan as serve_plan
    from .serve import start as start_server
    from .serve import wait_healthy

    image = image_or_target
    if image is None or image in _target_names(ctx):
        image = ctx.profile.target(image).human_tag
    p = serve_plan(image, model, preset, port)
    client = connect()
    if not dry_run:
        if not port_free(p.port):
            raise InputError(f"port {p.port} is in use", "pass --port N")
        require_gpu(client)
    check_flags(client, image, p.flags)
    if dry_run:
        click.echo(dry_run_text(p), nl=False)
        return
    container = start_server(client, p)
    url = f"http://127.0.0.1:{p.port}"
    click.echo(f"starting {p.name} ({container.short_id}); waiting for {url}/health ...", err=True)
    try:
        wait_healthy(container, url)
    except (SglbuildError, KeyboardInterrupt):
        container.remove(force=True)
        raise
    click.echo(f"serving {p.model} at {url}  (stop: docker rm -f {p.name})")
    click.echo(f"curl {url}/generate -H 'Content-Type: application/json' "
               "-d '{\"text\": \"The capital of France is\", \"sampling_params\": {\"max_new_tokens\": 32}}'")


def _target_names(ctx: Context) -> set[str]:
    try:
        return set(ctx.profile.targets)
    except SglbuildError:
        return set()


def _repo_lock(ctx: Context, client, image: str):
    """The repository's current lock for the image's target, to report drift (None if there is none)."""
    try:
        labels = client.images.get(image).labels or {}
        t = ctx.profile.target(labels.get("io.sglbuild.target"))
        return read_lock(ctx.profile, t)
    except Exception:  # noqa: BLE001 - drift is a note; no profile or lock here is fine
        return None


def main() -> None:
    cli(prog_name="sglbuild")


if __name__ == "__main__":  # pragma: no cover
    main()
