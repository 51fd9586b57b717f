"""One exception hierarchy for every failure a user can act on, and the one exit-code table.

The CLI catches :class:`SglbuildError`, prints ``str(error)`` as one line and exits with
``error.exit_code``. Errors from the Docker engine are translated into this hierarchy
where sglbuild talks to the engine (:mod:`builder.engine`); anything else is a bug and
keeps its traceback.

Standard library only: the in-image probe (:mod:`builder.probe`) raises these too.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What each exit status means; the README's table is checked against this one."""

    OK = 0
    CHECK_FAILED = 1  # a check ran and failed: verify, --check-reproducible, diff, a push of an unverified image
    BAD_INPUT = 2  # the profile, a lock, an argument, or a file or image that is not there
    ENVIRONMENT = 3  # the engine does not answer or refuses, a tool is missing, the disk is full, the probe could not run
    NETWORK = 4  # a package index, Debian mirror, registry or download did not answer
    INTEGRITY = 5  # a file does not match its pinned sha256; a corrupt GPU binary
    BUILD_FAILED = 6  # a build step failed
    SMOKE_FAILED = 7  # the target's own smoke tests failed
    UNSATISFIABLE = 8  # no set of packages satisfies the profile for the image's platform
    INTERRUPTED = 130  # Ctrl-C or SIGTERM; partial work was removed or left resumable


class SglbuildError(Exception):
    """Base class: ``message`` says what is wrong, ``hint`` what to do about it.

    Never raised itself: every failure has a class below, and so an exit code.
    """

    exit_code: ExitCode = ExitCode.ENVIRONMENT

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.message} ({self.hint})" if self.hint else self.message
        return " ".join(text.split())  # one line, whatever the message quoted


# -- 1: a check ran and failed -------------------------------------------------------------

class CheckFailed(SglbuildError):
    """Raised when an image was checked and failed; could-not-run errors use other codes."""

    exit_code = ExitCode.CHECK_FAILED


class VerifyFailed(CheckFailed):
    """Raised by ``verify`` (and by ``build``'s gate) when at least one check failed."""


class NotReproducible(CheckFailed):
    """Raised by ``build --check-reproducible`` when two builds from scratch differ."""


class NotReady(CheckFailed):
    """Raised by ``doctor`` (and by ``serve``, which runs it first) when this machine cannot serve the image."""


class NotVerified(CheckFailed):
    """Raised by ``push`` and ``promote`` for an image that has not passed verify here."""


# -- 2: bad input ---------------------------------------------------------------------------

class InputError(SglbuildError):
    """The profile, the lock or a command-line argument is wrong."""

    exit_code = ExitCode.BAD_INPUT


class ProfileError(InputError):
    """Raised when the profile is missing, is not TOML, or has a bad key or value."""


class LockError(InputError):
    """Raised when a lock file is missing, malformed, or disagrees with its profile."""


class MissingFile(InputError):
    """Raised when a file the user names or must provide is not there (a prebuilt wheel, a path)."""


class ImageNotFound(InputError):
    """Raised when the engine has no image by that reference."""


# -- 3: this machine --------------------------------------------------------------------------

class EnvironmentProblem(SglbuildError):
    """Something on this machine is missing or not answering: engine, tool, disk."""

    exit_code = ExitCode.ENVIRONMENT


class EngineUnavailable(EnvironmentProblem):
    """Raised when no Docker engine answers."""


class EngineError(EnvironmentProblem):
    """Raised when the engine refuses a request (as opposed to a build step failing)."""


class ToolMissing(EnvironmentProblem):
    """Raised when a required program (mmdebstrap, cuobjdump, ...) is not installed."""


class DiskFull(EnvironmentProblem):
    """Raised when writing wheels, tarballs or layers runs out of space."""


class ProbeFailed(EnvironmentProblem):
    """Raised when the probe could not run inside an image (no Python there, a crash)."""


# -- 4, 8: the package world -----------------------------------------------------------------

class NetworkError(SglbuildError):
    """Raised when a package index, a Debian mirror, a registry or a download does not answer."""

    exit_code = ExitCode.NETWORK


class ResolutionError(SglbuildError):
    """Raised when the requirements cannot be satisfied for the image's platform."""

    exit_code = ExitCode.UNSATISFIABLE


# -- 5: integrity -----------------------------------------------------------------------------

class IntegrityError(SglbuildError):
    """Raised when a file does not match the sha256 (or version) the lock or profile pins."""

    exit_code = ExitCode.INTEGRITY


class FatbinError(IntegrityError):
    """Raised for a truncated or corrupt ELF or fatbin; names the file and the offset."""


# -- 6, 7: the build ----------------------------------------------------------------------------

class BuildFailed(SglbuildError):
    """Raised when a stage's Dockerfile step fails; carries the step's last lines."""

    exit_code = ExitCode.BUILD_FAILED


class SmokeTestFailed(SglbuildError):
    """Raised when a built image fails the target's smoke tests; the human tag is not moved."""

    exit_code = ExitCode.SMOKE_FAILED


# -- 130 --------------------------------------------------------------------------------------------

class Interrupted(SglbuildError):
    """Raised on Ctrl-C once partial work is cleaned up or left resumable."""

    exit_code = ExitCode.INTERRUPTED
