"""Parse server flags with the image's own SGLang: ``python -m builder.probe.flags JSON_LIST``.

Prints the parsed values as JSON, or exits 1 with the parser's own reason (``unrecognized
arguments: --disable-flashinfer``) as the last line of stderr, so the caller reports the
rejected argument, not a warning some import printed first. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys

# The parsed values verify reads (absent ones are reported as None: older SGLang lacks some).
FIELDS = ("attention_backend", "decode_attention_backend", "prefill_attention_backend", "sampling_backend",
          "disable_cuda_graph", "disable_radix_cache", "disable_custom_all_reduce", "host", "port")


class RejectedFlags(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage and exit 2
        raise RejectedFlags(message)


def parse(flags: list) -> dict:
    from sglang.srt.server_args import ServerArgs

    parser = _Parser(prog="sglang.launch_server")
    ServerArgs.add_cli_args(parser)
    args = parser.parse_args(["--model-path", "sglbuild-probe", *flags] if "--model-path" not in flags else flags)
    return {f: getattr(args, f, None) for f in FIELDS}


def main(argv: list) -> int:
    try:
        print(json.dumps(parse(json.loads(argv[0]))))
    except RejectedFlags as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
