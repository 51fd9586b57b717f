"""The ``sglbuild`` command: a thin click layer over profile -> lock -> wheelhouse -> plan -> build -> gate -> tag.

Each command parses its options, calls the step modules and prints what they return;
decisions live in those modules. Expected failures are :class:`SglbuildError` (one line,
its exit code, see :class:`builder.errors.ExitCode`); engine errors are translated where
sglbuild talks to the engine, and here once more as a last net.
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_loading(signum: int, frame: object) -> None:
    """Ctrl-C while sglbuild is still loading its modules: no command has begun, so there is nothing to undo."""
    sys.stderr.write("sglbuild: error: interrupted before the command began; nothing was changed\n")
    os._exit(130)  # ExitCode.INTERRUPTED, not imported yet


if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "sglbuild":  # run as the program, not imported by a test
    signal.signal(signal.SIGINT, _interrupted_while_loading)  # until main(): a traceback from an import is not one line

import functools  # noqa: E402
import json  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import click  # noqa: E402

from . import __version__  # noqa: E402
from .check.server import PRESETS  # noqa: E402
from .errors import ExitCode, SglbuildError, VerifyFailed  # noqa: E402
from .inputs.profile import DEFAULT_PROFILE, Profile, Target, load_profile  # noqa: E402
from .ui import Reporter  # noqa: E402

# Each command imports the steps it runs: `sglbuild archs FILE` should not pay for docker-py,
# and `sglbuild lock --check` not for the SBOM library.


def _fail(message: str, code: int) -> None:
    click.echo(f"sglbuild: error: {message}", err=True)
    sys.exit(code)


def _engine_error(exc: BaseException) -> SglbuildError | None:
    """An engine exception that escaped translation (docker-py or requests), as one of ours."""
    if not type(exc).__module__.startswith(("docker", "requests", "urllib3")):
        return None
    from .engine import translate

    return translate(exc, "a request")


def handled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Expected failures become one line and their exit code; bugs keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            return fn(*args, **kwargs)
        except SglbuildError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted; nothing was tagged", ExitCode.INTERRUPTED)
        except Exception as exc:
            ours = _engine_error(exc)
            if ours is None:
                raise
            _fail(str(ours), ours.exit_code)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


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

    @functools.cached_property
    def engine(self) -> Any:
        from .engine import connect

        return connect()

    @property
    def profile_or_none(self) -> Profile | None:
        """The profile, where there is one (verify and inspect work on any image, anywhere)."""
        try:
            return self.profile
        except SglbuildError:
            return None

    def target(self, name: str | None) -> Target:
        return self.profile.target(name)

    def connect(self) -> Any:
        return self.engine


pass_ctx = click.make_pass_decorator(Context)


def _repo(value: str | None) -> str | None:
    """A registry repository argument, checked before anything runs (a URL with credentials is not repeated)."""
    from .oci import check_repo

    try:
        return check_repo(value) if value else value
    except SglbuildError as exc:
        raise click.BadParameter(str(exc)) from None


class Group(click.Group):
    """click's usage errors as every other error: one line, what is wrong and what to do, exit 2."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "sglbuild"
            _fail(f"{exc.format_message()} (see '{where} --help')", ExitCode.BAD_INPUT)
        except click.ClickException as exc:  # a bad file argument and the like
            _fail(exc.format_message(), ExitCode.BAD_INPUT)
        except click.exceptions.Abort:  # Ctrl-C outside a command (at a prompt)
            _fail("interrupted", ExitCode.INTERRUPTED)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sglbuild")
@click.option("--profile", "profile_path", default=DEFAULT_PROFILE, show_default=True, help="Profile declaring the image targets.")
@click.option("--wheels", default=None, help="Wheelhouse directory [default: wheels/ beside the profile].")
@click.pass_context
def cli(ctx: click.Context, profile_path: str, wheels: str | None) -> None:
    """Build reproducible, verified SGLang images for NVIDIA Blackwell (sm_120) GPUs."""
    ctx.obj = Context(profile_path, wheels)


@cli.command()
@click.argument("target", required=False)
@click.option("--check", is_flag=True, help="Only check that the lock (and its pylock.toml) match the profile; change nothing.")
@click.option("--update", is_flag=True, help="Re-resolve even if the lock is up to date: move pins forward within the profile.")
@pass_ctx
@handled
def lock(ctx: Context, target: str | None, check: bool, update: bool) -> None:
    """Resolve every input of TARGET for the image's platform and write its lock file.

    An up-to-date lock is kept as it is (no network); --update moves every pin to the
    newest the profile allows (newest nightly of a channel, newest release in a range)
    and prints what changed. A failed resolution leaves the old lock untouched. Beside
    the lock, locks/pylock.TARGET.toml holds its Python pins in PEP 751's format.
    """
    from .inputs.locking import check_lock_files, lock_target
    from .inputs.lockfile import lock_path

    t = ctx.target(target)
    if check:
        lk = check_lock_files(ctx.profile, t)
        click.echo(f"{lock_path(ctx.profile, t)}: up to date ({lk.summary()})")
        return
    done = lock_target(ctx.profile, t, ctx.wheelhouse, update=update, on_resolve=lambda: click.echo(
        f"resolving {t.name} for the image's platform (linux x86_64, its CPython, manylinux) ...", err=True))
    if not done.resolved:
        click.echo(f"{done.path}: up to date (sglbuild lock --update moves the pins forward)")
        return
    for line in done.changes:
        click.echo(f"  {line}")
    for platform, closure in done.lock.locks.items():  # newer releases the profile admits that did not resolve, and why
        for line in closure.passed_over:
            click.echo(f"  {platform + ': ' if done.lock.multi else ''}{line}")
    new, first = done.lock, done.lock.lock()
    click.echo(f"{done.path}: {'written' if done.changes else 'no pin moved'}: {new.summary()}, "
               f"Python {first.platform.python}, glibc {first.platform.glibc}, sha256:{new.digest[:16]}")


@cli.command()
@click.argument("target", required=False)
@click.option("--jobs", "-j", default=4, show_default=True, help="Parallel downloads.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH",
              help="Only this platform's files (repeatable) [default: every platform of the target].")
@pass_ctx
@handled
def fetch(ctx: Context, target: str | None, jobs: int, quiet: bool, platforms: tuple[str, ...]) -> None:
    """Fill the wheelhouse from TARGET's lock (parallel, resumable, sha256-verified)."""
    from .inputs.wheelhouse import fetch_target

    result = fetch_target(ctx.profile, ctx.target(target), ctx.wheelhouse, Reporter(quiet=quiet), jobs=jobs, platforms=platforms)
    click.echo(f"{ctx.wheelhouse}: {len(result.present) + len(result.downloaded)} of {result.wanted} files verified "
               f"({len(result.downloaded)} downloaded, {result.bytes / 1e6:.0f} MB)")


@cli.command()
@click.argument("target", required=False)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write the Dockerfile here.")
@click.option("--platform", metavar="OS/ARCH", help="This platform's [default: the target's first].")
@pass_ctx
@handled
def render(ctx: Context, target: str | None, output: str | None, platform: str | None) -> None:
    """Render TARGET's multi-stage Dockerfile from the profile and its lock."""
    from .pipeline import builder_kind, plans

    t = ctx.target(target)
    chosen = platform or t.platform_names[0]
    text = plans(ctx.profile, t, builder_kind(ctx.connect), (chosen,))[chosen].dockerfile
    if output:
        Path(output).write_text(text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


@cli.command("plan")
@click.argument("targets", nargs=-1)
@click.option("--all", "all_targets", is_flag=True, help="Every target of the profile.")
@click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH",
              help="Only this of the targets' platforms (repeatable) [default: every one build would build].")
@click.option("--json", "json_mode", is_flag=True, help="Print JSON.")
@pass_ctx
@handled
def plan_command(ctx: Context, targets: tuple[str, ...], all_targets: bool, platforms: tuple[str, ...], json_mode: bool) -> None:
    """Each stage of TARGETS, for each platform, its key, and whether the next build reuses or builds it."""
    from .assemble.plan import plans_text
    from .pipeline import show_plans

    names = sorted(ctx.profile.targets) if all_targets else (list(targets) or [None])
    view = show_plans(ctx.profile, names, ctx.connect, every=all_targets, platforms=platforms)
    if json_mode:
        click.echo(json.dumps([p.to_dict(view.present) for p in view.plans], indent=2))
    else:
        click.echo(plans_text(view.plans, view.present), nl=False)
    for line in view.unlocked:
        click.echo(line, err=True)


@cli.command()
@click.argument("target", required=False)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@click.option("--json", "json_mode", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--verbose", "-v", is_flag=True, help="Stream the engine's build output.")
@click.option("--no-cache", is_flag=True, help="Rebuild the base and every stage from scratch (no stage or engine cache).")
@click.option("--check-reproducible", is_flag=True, help="Build twice from scratch and compare, layer by layer; tag nothing.")
@click.option("--cache", "cache_repo", default=None, metavar="REPO", callback=lambda c, p, v: _repo(v),
              help="A registry repository as the stage cache: pull the stages it has, push the ones built here.")
@click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH",
              help="Only this of the target's platforms (repeatable) [default: every one, the engine's own first].")
@pass_ctx
@handled
def build(ctx: Context, target: str | None, quiet: bool, json_mode: bool, verbose: bool, no_cache: bool,
          check_reproducible: bool, cache_repo: str | None, platforms: tuple[str, ...]) -> None:
    """Build TARGET's stages (reusing unchanged ones), verify the image, then tag it: for each of its platforms."""
    from . import pipeline
    from .check.repro import repro_text

    reporter = Reporter(quiet=quiet, json_mode=json_mode)
    if check_reproducible:
        reports = pipeline.reproducible(ctx.engine, ctx.profile, target, ctx.wheelhouse, reporter, platforms=platforms)
        for _, report in reports:
            click.echo(json.dumps(report.to_dict(), indent=2) if json_mode else repro_text(report), nl=False)
        failed = pipeline.not_reproducible(ctx.target(target).name, reports)
        if failed:
            raise failed
        return
    outcomes = pipeline.build(ctx.engine, ctx.profile, target, ctx.wheelhouse, reporter, platforms=platforms, fresh=no_cache,
                              verbose=verbose, cache_repo=cache_repo)
    rows = [o.to_dict() for o in outcomes]
    reporter.emit(rows[0] if len(rows) == 1 else {"platforms": rows})


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--arch", "target_arch", default=None, help="Also say how a GPU of this architecture runs each file (e.g. sm_120).")
@click.option("--json", "json_mode", is_flag=True, help="Print JSON instead of a table.")
@handled
def archs(paths: tuple[str, ...], target_arch: str | None, json_mode: bool) -> None:
    """List the SASS and PTX architectures in .so files, wheels, trees or docker://IMAGE."""
    from .check.archs import scan, table, table_text

    def connect() -> Any:
        from .engine import connect as engine_connect

        return engine_connect()

    rows = table(scan(list(paths), connect), target_arch)
    click.echo(json.dumps(rows, indent=2) if json_mode else table_text(rows, target_arch), nl=not json_mode)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("image")
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--arch", "target_arch", default=None, metavar="SM[,SM...]",
              help="Target architectures, e.g. sm_120 or sm_100,sm_121 [default: the image's io.sglbuild.gpu-arch label, else this host's GPU].")
@click.option("--lock", "lock_file", type=click.Path(dir_okay=False), default=None,
              help="Compare the installed pins with this lock [default: the lock inside the image, if any].")
@click.option("--gpu", type=click.Choice(["auto", "require", "off"]), default="auto", show_default=True,
              help="GPU checks: when a GPU is there, always (fail without one), or never.")
@click.option("--model", default=None, help="Model path or Hugging Face ID for the serving check (needs a GPU).")
@click.option("--fresh", is_flag=True, help="Probe the image again instead of reading this machine's earlier answer for it.")
@click.option("--platform", default=None, metavar="OS/ARCH",
              help="For REPO@sha256:... of an index: the platform's image to pull (only it) and verify [default: this engine's].")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "junit", "markdown"]), default="text", show_default=True,
              help="markdown: the feature table only, for documentation.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="Write the report here too.")
@click.option("--key", "key_file", type=click.Path(dir_okay=False), default=None,
              help="For REPO@sha256:...: check the attestations the registry holds with this public key (no layer is pulled "
                   "when the image is not here).")
@click.option("--require-attestation", is_flag=True, help="Fail when the registry holds no attestation of the image.")
@pass_ctx
@handled
def verify(ctx: Context, image: str, run_args: tuple[str, ...], target_arch: str | None, lock_file: str | None, gpu: str,
           model: str | None, fresh: bool, platform: str | None, fmt: str, output: str | None, key_file: str | None,
           require_attestation: bool) -> None:
    """Check that IMAGE can serve on its GPU architectures (static checks; GPU checks when a GPU is there).

    Any image: one sglbuild built (its labels and lock) or one made by hand (its ENTRYPOINT/CMD).
    RUN_ARGS, after --, are what you pass to docker run: verify parses the server command they make.
    """
    from .pipeline import verify_image

    args = list(run_args[1:] if run_args[:1] == ("--",) else run_args) if run_args else None
    report = verify_image(ctx.engine, ctx.profile_or_none, image, archs=target_arch, lock_file=lock_file, gpu=gpu, model=model,
                          fresh=fresh, platform=platform, key_file=key_file, require_attestation=require_attestation, run_args=args)
    text = report.render(fmt)
    click.echo(text, nl=False)
    if output:
        Path(output).write_text(text)
    if not report.passed:
        raise VerifyFailed(f"{image} failed {len(report.failed)} check(s): {', '.join(report.title(c) for c in report.failed)}")


@cli.command()
@click.argument("image_a")
@click.argument("image_b")
@click.option("--semantic", is_flag=True, help="Ignore timestamps: compare content, mode, owner and presence.")
@click.option("--json", "json_mode", is_flag=True, help="Print JSON.")
@pass_ctx
@handled
def diff(ctx: Context, image_a: str, image_b: str, semantic: bool, json_mode: bool) -> None:
    """Compare two images layer by layer and file by file (exit 1 when they differ)."""
    from .check.diff import diff_images, diff_text, differs

    diffs = diff_images(ctx.engine, image_a, image_b, semantic)
    if json_mode:
        click.echo(json.dumps([{**asdict(d), "identical": d.identical} for d in diffs], indent=2))
    else:
        click.echo(diff_text(diffs, semantic), nl=False)
    if differs(diffs, semantic):
        sys.exit(ExitCode.CHECK_FAILED)


@cli.command()
@click.argument("image")
@click.option("--write-lock", type=click.Path(dir_okay=False), help="Write the lock the image was built from here.")
@click.option("--write-sbom", type=click.Path(dir_okay=False), help="Write the image's CycloneDX SBOM here.")
@click.option("--key", "key_file", type=click.Path(dir_okay=False), default=None,
              help="Check the signatures of the attestations the registry holds with this public key.")
@pass_ctx
@handled
def inspect(ctx: Context, image: str, write_lock: str | None, write_sbom: str | None, key_file: str | None) -> None:
    """Say how IMAGE was built; write its lock (to rebuild it) or SBOM back out. REPO@sha256:... or REPO:TAG not on this
    engine: as its registry holds it, with its attestations (no layer is pulled)."""
    from .pipeline import inspect as run_inspect

    info, written = run_inspect(ctx.engine, image, key_file, {"lock.json": write_lock, "sbom.cdx.json": write_sbom})
    click.echo(info.text(), nl=False)
    for path in written:
        click.echo(f"wrote {path}", err=True)


@cli.command()
@click.argument("image")
@click.argument("repo", callback=lambda c, p, v: _repo(v))
@click.option("--force", is_flag=True, help="Push even if the image has not passed verify here.")
@click.option("--sign-key", type=click.Path(dir_okay=False), default=None,
              help="Sign the attestations with this private key ('sglbuild keygen'); unsigned without it.")
@click.option("--platform", default=None, help="Only this platform's image of TARGET (a CI job per platform; 'join' makes the index).")
@pass_ctx
@handled
def push(ctx: Context, image: str, repo: str, force: bool, sign_key: str | None, platform: str | None) -> None:
    """Push IMAGE (or a multi-platform TARGET: each platform's image and one image index) to REPO, each image with its
    attestations (SBOM, provenance, verify report) attached; print REPO@sha256:DIGEST."""
    from .check.attested import NAMES
    from .pipeline import push_target_or_image

    pushed = push_target_or_image(ctx.engine, ctx.profile_or_none, image, repo, force=force, sign_key=sign_key, platform=platform)
    for platform, digest in pushed.platforms.items():
        click.echo(f"pushed {platform}: {repo}@{digest}", err=True)
    for digest, attached in pushed.attached.items():
        signer = f"signed by {attached[0].signed_by[:16]}" if attached and attached[0].signed_by else "unsigned"
        click.echo(f"attested {digest[:19]}: {', '.join(NAMES.get(a.predicate_type, a.predicate_type) for a in attached)} ({signer})", err=True)
    click.echo(f"pushed {pushed.tag}", err=True)
    click.echo(pushed.ref)


@cli.command()
@click.option("--output", "-o", default="sglbuild", show_default=True, metavar="PREFIX",
              help="Write PREFIX.key (private, mode 0600; encrypted when SGLBUILD_KEY_PASSWORD is set) and PREFIX.pub.")
@handled
def keygen(output: str) -> None:
    """Make an Ed25519 key pair to sign attestations with ('push --sign-key', 'verify --key')."""
    from .sign import keygen as make_keys

    private, public = make_keys(Path(output))
    click.echo(f"wrote {private} (keep it secret) and {public} (give it to whoever verifies)")


@cli.command()
@click.argument("target", required=False)
@click.argument("refs", nargs=-1, required=True)
@click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False), help="The public key the images' attestations are signed with.")
@click.option("--json", "json_mode", is_flag=True, help="Print the index and its platforms' digests as JSON.")
@pass_ctx
@handled
def join(ctx: Context, target: str | None, refs: tuple[str, ...], key_file: str, json_mode: bool) -> None:
    """Write TARGET's image index from its platforms' images already in the registry (REFS: REPO@sha256:..., as
    'push --platform' printed them), each checked first (platform, signed attestations, verdicts); print REPO@sha256:INDEX."""
    from .pipeline import join_target

    if target is not None and "@" in target:  # no target named: the default one
        refs, target = (target, *refs), None
    joined = join_target(ctx.engine, ctx.profile_or_none, target, list(refs), key_file)
    if json_mode:
        click.echo(json.dumps({"index": joined.ref, "tag": joined.tag, "platforms": joined.platforms, "bytes_read": joined.bytes_read}))
        return
    for platform, digest in joined.platforms.items():
        click.echo(f"joined {platform}: {digest}", err=True)
    click.echo(f"pushed {joined.tag} ({joined.bytes_read} bytes read from the registry, no layer)", err=True)
    click.echo(joined.ref)


@cli.command()
@click.argument("ref")
@click.argument("tag")
@click.option("--require-gpu", is_flag=True, help="Only if the image passed verify with --gpu require.")
@click.option("--verdicts", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="verify's JSON reports of REF's images (from the jobs that verified each platform); instead of this machine's records.")
@pass_ctx
@handled
def promote(ctx: Context, ref: str, tag: str, require_gpu: bool, verdicts: tuple[str, ...]) -> None:
    """Move REPO:TAG in the registry to REF (REPO@sha256:...), once every image of REF has passed verify."""
    from .ship.registry import promote as promote_image, read_verdict

    reports = [read_verdict(Path(v)) for v in verdicts] if verdicts else None
    click.echo(f"{promote_image(ctx.engine, ref, tag, require_gpu, reports)} -> {ref}")


@cli.command()
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@pass_ctx
@handled
def gc(ctx: Context, dry_run: bool) -> None:
    """Remove what interrupted runs left: untagged sglbuild images, stopped containers, the build network, temp dirs."""
    from .assemble.gc import collect, text

    wheelhouse = ctx.wheelhouse if ctx.profile_or_none is not None or ctx.wheels_opt else Path("wheels")  # outside a project too
    click.echo(text(collect(ctx.engine, wheelhouse, dry_run=dry_run), dry_run), nl=False)


@cli.command()
@click.argument("image_or_target", required=False)
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
              help="Check for the server serve --preset starts (its shared memory) [default: serve's defaults].")
@click.option("--json", "json_mode", is_flag=True, help="Print the findings as JSON.")
@click.option("--nvidia-smi", default=None, metavar="PATH", help="The nvidia-smi to ask [default: the one on PATH].")
@pass_ctx
@handled
def doctor(ctx: Context, image_or_target: str | None, preset: str | None, json_mode: bool, nvidia_smi: str | None) -> None:
    """Check this machine before serving: driver, GPUs, the engine's GPU runtime; with an IMAGE, what it needs."""
    from .check.doctor import doctor as run_doctor
    from .check.host import host_platform
    from .check.server import DEFAULT_SHM
    from .errors import NotReady
    from .pipeline import image_of

    # On an arm64 machine, a target's arm64 image.
    image = image_of(ctx.profile_or_none, image_or_target, host_platform()) if image_or_target is not None else None
    report = run_doctor(lambda: ctx.engine, image, nvidia_smi=nvidia_smi, shm=PRESETS[preset].shm if preset else DEFAULT_SHM)
    click.echo(json.dumps(report.to_dict(), indent=2) if json_mode else report.text(), nl=json_mode)
    if report.failed:
        raise NotReady(f"{len(report.failed)} of {len(report.checks)} checks failed: {', '.join(c.name for c in report.failed)}",
                       report.failed[0].hint or "see the lines above")


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("image_or_target", required=False)
@click.argument("sglang_flags", nargs=-1, type=click.UNPROCESSED)
@click.option("--model", default=None, help="Hugging Face ID or local directory [default: the preset's model].")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None, help="The field report's settings for a model.")
@click.option("--port", type=int, default=None, help="Host port [default: the preset's, else 30000].")
@click.option("--public", is_flag=True, help="Publish on every interface of this host, with an API key (default: 127.0.0.1 only).")
@click.option("--api-key", default=None, envvar="SGLBUILD_API_KEY", help="The key a public server requires [default: generated, printed once].")
@click.option("--force", is_flag=True, help="Start even when the flags select what the image's evidence says cannot run on this GPU.")
@click.option("--no-cache-volume", is_flag=True, help="Keep no compile caches across restarts (every start compiles again).")
@click.option("--dry-run", is_flag=True, help="Check the flags with the image's SGLang and print the docker run command.")
@pass_ctx
@handled
def serve(ctx: Context, image_or_target: str | None, sglang_flags: tuple[str, ...], model: str | None, preset: str | None,
          port: int | None, public: bool, api_key: str | None, force: bool, no_cache_volume: bool, dry_run: bool) -> None:
    """Serve a model from an image (or a target's image) with flags its SGLang accepts. SGLANG_FLAGS, after --, go to the
    server after the image's own and the preset's (sglbuild serve IMAGE --preset tinyllama -- --context-length 4096)."""
    from .check.host import host_platform
    from .pipeline import image_of
    from .ship.serve import serve as run_server

    flags = sglang_flags[1:] if sglang_flags[:1] == ("--",) else sglang_flags
    if image_or_target is not None and image_or_target.startswith("-"):  # flags given before any image: the target's
        flags, image_or_target = (image_or_target, *flags), None
    image = image_of(ctx.profile_or_none, image_or_target, host_platform())
    click.echo(run_server(ctx.engine, image, model=model, preset=preset, port=port, public=public, api_key=api_key,
                          dry_run=dry_run, say=lambda line: click.echo(line, err=True), flags=tuple(flags), force=force,
                          caches=not no_cache_volume), nl=False)


def main() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)  # loaded: Ctrl-C now undoes what the command began
    try:
        cli(prog_name="sglbuild")
    finally:
        # The command has ended and said so: a Ctrl-C while Python joins its threads at exit has nothing left to stop,
        # so it is ignored and the exit code stays the command's (not a signal's, with no line).
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":  # pragma: no cover
    main()
