"""``python3 -m builder.probe COMMAND``: the probe's one entry point; the last line is JSON.

    archs ROOT...              GPU code of every library under each ROOT ('/' for the whole image)
    static [--flags JSON] [--target sm_120[,sm_121...]] [--no-jit] [--aot JSON]
                               everything verify's static checks need; the server flags to parse;
                               the targets to run the JIT probe (builder.probe.jit) for, unless
                               --no-jit (the caller holds its answer for the same files); the
                               FlashInfer modules declared ahead of time, to resolve with JIT off
    flags JSON                 only the server flags, parsed by the image's own SGLang
    jit --target sm_120 [--run]   only the JIT probe
    gpu [--target sm_120]      the device, the image's code on it, a matmul and sgl_kernel's RMSNorm

A failure is an answer too: ``{"probe_error": "..."}`` and exit 1.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict


def _option(args: list, name: str, default: object) -> object:
    return args[args.index(name) + 1] if name in args else default


def main(argv: list) -> int:
    command, args = (argv[0] if argv else ""), argv[1:]
    try:
        if command == "archs":
            from .static import libraries

            answer: object = [asdict(c) for c in libraries(args or ["/"])]
        elif command == "static":
            from .static import static

            answer = static(json.loads(_option(args, "--flags", "null")), _option(args, "--target", None),
                            jit="--no-jit" not in args, aot=_option(args, "--aot", None)).to_dict()
        elif command == "flags":
            from .static import parse_flags

            answer = asdict(parse_flags(json.loads(args[0]))[0])
        elif command == "jit":
            from .jit import jit_checks

            answer = jit_checks(str(_option(args, "--target", "sm_120")).split(","), "--run" in args)
        elif command == "gpu":
            from .gpu import gpu_checks

            answer = gpu_checks(_option(args, "--target", None)).to_dict()
        else:
            answer = {"probe_error": f"unknown probe command {command!r}"}
    except Exception as exc:  # noqa: BLE001 - reported as JSON to the caller
        answer = {"probe_error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(answer))
    return 1 if isinstance(answer, dict) and "probe_error" in answer else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
