"""One exception hierarchy for every failure a user can act on.

The CLI catches :class:`SglbuildError`, prints ``str(error)`` as one line and exits
with ``error.exit_code``; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SglbuildError(Exception):
    """Base class: ``message`` says what is wrong, ``hint`` what to do about it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(SglbuildError):
    """The profile, the lock or a command-line argument is wrong."""

    exit_code = 2


class ProfileError(InputError):
    """Raised when the profile is missing, is not TOML, or has a bad key or value."""


class LockError(InputError):
    """Raised when a lock file is missing, malformed, or disagrees with its profile."""


class EnvironmentProblem(SglbuildError):
    """Something on this machine is missing or not answering: engine, tool, disk."""

    exit_code = 3


class EngineUnavailable(EnvironmentProblem):
    """Raised when no Docker engine answers."""


class EngineError(EnvironmentProblem):
    """Raised when the engine refuses an operation (as opposed to a build step failing)."""


class ToolMissing(EnvironmentProblem):
    """Raised when a required program (mmdebstrap, git, ...) is not installed."""


class DiskFull(EnvironmentProblem):
    """Raised when writing wheels, tarballs or layers runs out of space."""


class NetworkError(SglbuildError):
    """Raised when a package index, a Debian mirror or a download does not answer."""

    exit_code = 4


class ResolutionError(SglbuildError):
    """Raised when the requirements cannot be satisfied for the image's platform."""

    exit_code = 4


class IntegrityError(SglbuildError):
    """Raised when a file does not match the sha256 (or version) the lock pins."""

    exit_code = 5


class BuildFailed(SglbuildError):
    """Raised when a stage's Dockerfile step fails; carries the step's last lines."""

    exit_code = 6


class CheckFailed(SglbuildError):
    """Raised when an image was checked and failed (verify, reproducibility): exit 1.

    Errors that kept the check from running at all use their own codes (2, 3).
    """

    exit_code = 1


class SmokeTestFailed(SglbuildError):
    """Raised when a built image fails its smoke tests; the human tag is not moved."""

    exit_code = 7


class Interrupted(SglbuildError):
    """Raised on Ctrl-C once partial work is cleaned up or left resumable."""

    exit_code = 130
