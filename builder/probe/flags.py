"""Parse server flags with the image's own SGLang: ``python -m builder.probe.flags JSON_LIST``.

Prints one JSON object: the values the parser gave (``parsed``, or null when it refused),
the parser's own reason when it refused (``error: unrecognized arguments:
--disable-flashinfer``, not a warning some import printed first), and the choices the image's
SGLang offers (``choices``: attention and sampling backends, and which switches exist).
Standard library only; sglang is the image's own.
"""

from __future__ import annotations

import argparse
import json
import sys

# The parsed values verify reads (absent ones are reported as None: older SGLang lacks some).
FIELDS = ("attention_backend", "decode_attention_backend", "prefill_attention_backend", "sampling_backend",
          "disable_cuda_graph", "disable_radix_cache", "disable_custom_all_reduce", "tp_size", "host", "port")


class RejectedFlags(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage and exit 2
        raise RejectedFlags(message)


# Switches whose presence verify reports (older and newer SGLang differ).
SWITCHES = ("--disable-cuda-graph", "--disable-radix-cache", "--disable-custom-all-reduce", "--disable-flashinfer",
            "--enable-torch-compile", "--api-key")


def parser() -> argparse.ArgumentParser:
    from sglang.srt.server_args import ServerArgs

    p = _Parser(prog="sglang.launch_server")
    ServerArgs.add_cli_args(p)
    return p


def choices(p: argparse.ArgumentParser) -> dict:
    options = {opt: action for action in p._actions for opt in action.option_strings}  # noqa: SLF001 - argparse has no public list
    return {
        "attention_backend": sorted(getattr(options.get("--attention-backend"), "choices", None) or []),
        "sampling_backend": sorted(getattr(options.get("--sampling-backend"), "choices", None) or []),  # some are sets
        "switches": [s for s in SWITCHES if s in options],
    }


def parse(p: argparse.ArgumentParser, flags: list) -> dict:
    args = p.parse_args(["--model-path", "sglbuild-probe", *flags] if "--model-path" not in flags else flags)
    return {f: getattr(args, f, None) for f in FIELDS}


def main(argv: list) -> int:
    p = parser()
    answer: dict = {"choices": choices(p), "parsed": None, "error": None}
    try:
        answer["parsed"] = parse(p, json.loads(argv[0]))
    except RejectedFlags as exc:
        answer["error"] = f"error: {exc}"
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
