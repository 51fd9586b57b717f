"""``python3 -m builder.probe COMMAND``: the probe's one entry point; the last line is JSON.

    archs ROOT...              GPU code of every library under each ROOT ('/' for the whole image)
    static [FLAGS_JSON]        everything verify's static checks need (FLAGS_JSON: server flags to parse)
    flags FLAGS_JSON           only the server flags, parsed by the image's own SGLang
    gpu [--target sm_120]      the device, the image's code on it, a matmul and sgl_kernel's RMSNorm

A failure is an answer too: ``{"probe_error": "..."}`` and exit 1.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict


def main(argv: list) -> int:
    command, args = (argv[0] if argv else ""), argv[1:]
    try:
        if command == "archs":
            from .static import libraries

            answer: object = [asdict(c) for c in libraries(args or ["/"])]
        elif command == "static":
            from .static import static

            answer = static(json.loads(args[0]) if args else None).to_dict()
        elif command == "flags":
            from .static import run_python

            answer = asdict(run_python("builder.probe.flags", args[0], module=True))
        elif command == "gpu":
            from .gpu import gpu_checks

            answer = gpu_checks(args[args.index("--target") + 1] if "--target" in args else None).to_dict()
        else:
            answer = {"probe_error": f"unknown probe command {command!r}"}
    except Exception as exc:  # noqa: BLE001 - reported as JSON to the caller
        answer = {"probe_error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(answer))
    return 1 if isinstance(answer, dict) and "probe_error" in answer else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
