"""Step 4, render: Dockerfile text from the package's ``templates/Dockerfile.j2``.

The same template renders the whole multi-stage file (for people to read and diff) and
each stage on its own (what the build runs, ``FROM`` the parent stage's tag), so what is
built is exactly what ``sglbuild render`` shows. :mod:`builder.assemble.plan` gives it its values.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Sequence

import jinja2

from ..errors import InputError

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def dockerfile_value(value: str) -> str:
    """A value for ``ENV`` (or ``LABEL``), double-quoted so the engine's parser gives it back byte for byte.

    Inside double quotes the Dockerfile parser treats ``\\``, ``"`` and ``$`` (expansion) specially
    and nothing else; a newline cannot be written at all.
    """
    if any(c in value for c in "\n\r\0"):
        raise InputError(f"{value!r}: a Dockerfile value cannot hold a newline or NUL", "put it on one line")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def _environment(template_dir: Path) -> jinja2.Environment:
    # trim_blocks and lstrip_blocks: a block tag takes its own line with it, so the template reads as the Dockerfile.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(template_dir), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False, trim_blocks=True, lstrip_blocks=True)
    env.filters["dockerfile_value"] = dockerfile_value
    env.filters["shquote"] = shlex.quote
    return env


def render_template(name: str, values: dict[str, Any], template_dir: Path = TEMPLATES) -> str:
    try:
        return _environment(template_dir).get_template(name).render(**values)
    except jinja2.TemplateNotFound as exc:
        raise InputError(f"template {exc.name} not found in {template_dir}") from None
    except jinja2.UndefinedError as exc:
        raise InputError(f"{template_dir / name}: {exc.message}", "the template uses a value the renderer does not give") from None


def render_dockerfile(values: dict[str, Any], stages: Sequence[Any], *, header: bool, template_dir: Path = TEMPLATES) -> str:
    """STAGES (each with name, kind, parent, wheels) as Dockerfile text; ``header`` for the file people read."""
    text = render_template("Dockerfile.j2", {**values, "stages": stages, "header": header}, template_dir)
    return text.strip("\n") + "\n"


def render_entrypoint(flags: Sequence[str]) -> str:
    """The image's entrypoint: arguments that start with '-' go to the server after FLAGS."""
    return render_template("entrypoint.sh.j2", {"flags": list(flags)})
