"""Parse server flags with the image's own SGLang: ``python -m builder.probe.flags JSON_LIST [sm_100,sm_120]``.

Prints one JSON object: SGLang's version, the values the parser gave (``parsed``, or null when it
refused), the parser's own reason when it refused (``error: unrecognized arguments:
--disable-flashinfer``, not a warning some import printed first), the choices the image's
SGLang offers (``choices``: attention and sampling backends, and which switches exist), and,
for each architecture given, what the image's SGLang itself picks for a backend the flags leave
unset (``defaults``): SGLang decides that at start-up from the GPU it finds, so its own choosing
code is run here with the GPU's facts said for it (an MHA model such as Llama, no speculative
decoding unless the flags ask for it). Standard library only; sglang is the image's own.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from types import SimpleNamespace
from unittest import mock

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


def gpu_facts(arch: str) -> dict:
    """What SGLang's platform probes answer on a GPU of ARCH (sm_120: capability 12.0) with CUDA. FlashInfer is
    "available" when it imports: on a CUDA machine that is all SGLang's is_flashinfer_available() asks."""
    cap = int("".join(c for c in arch if c.isdigit()))
    major, minor = divmod(cap, 10)
    return {"is_cuda": True, "is_hip": False, "is_npu": False, "is_xpu": False, "is_musa": False, "is_mps": False,
            "is_sm90": major == 9, "is_sm100": major == 10, "is_sm110": major == 11, "is_sm100_or_sm110": major in (10, 11),
            "is_sm120": major == 12, "is_blackwell": major in (10, 11, 12), "is_hopper_with_cuda_12_3": major == 9,
            "has_flashinfer": importlib.util.find_spec("flashinfer") is not None,
            "device_sm": cap, "device_capability": (major, minor)}


_MHA_MODEL = SimpleNamespace(hf_config=SimpleNamespace(architectures=["LlamaForCausalLM"]), has_asymmetric_kv=False,
                             has_attention_sinks=False, is_multimodal=False)


def default_backends(args: argparse.Namespace, arch: str) -> dict:
    """The attention and sampling backends the image's SGLang picks on ARCH for what ARGS leave unset."""
    facts = gpu_facts(arch)
    try:  # SGLang 0.5.17 and later: one function, and a scoped override of the platform's facts
        from sglang.srt.arg_groups.model_override_base import get_default_attn_backend
        from sglang.srt.arg_groups.overrides import _sampling_backend_default
        from sglang.srt.runtime_context import override_platform
    except ImportError:
        return _defaults_in_server_args(args, facts)
    with override_platform(**facts):
        attention = get_default_attn_backend(args, False, _MHA_MODEL)
        sampling = _sampling_backend_default(SimpleNamespace(sampling_backend=None))["sampling_backend"]
    return {"attention_backend": attention, "sampling_backend": sampling, "via": "model_override_base.get_default_attn_backend"}


def _defaults_in_server_args(args: argparse.Namespace, facts: dict) -> dict:
    """Older SGLang (0.5.x before 0.5.17) picks inside ServerArgs' start-up: its own methods, run on the parsed values with
    its platform probes answering for the GPU. They go on to check other settings; what they picked is read after."""
    import sglang.srt.server_args as sa

    probes = {"is_cuda": facts["is_cuda"], "is_hip": False, "is_npu": False, "is_xpu": False, "is_mps": False,
              "is_sm90_supported": facts["is_sm90"], "is_sm100_supported": facts["is_sm100"], "is_sm120_supported": facts["is_sm120"],
              "is_blackwell_supported": facts["is_blackwell"], "is_hopper_with_cuda_12_3": facts["is_hopper_with_cuda_12_3"],
              "is_flashinfer_available": facts["has_flashinfer"]}
    values = vars(args).copy()
    me = SimpleNamespace(**values, get_model_config=lambda: _MHA_MODEL, use_mla_backend=lambda: False)
    with mock.patch.multiple(sa, **{k: (lambda v=v: v) for k, v in probes.items() if hasattr(sa, k)}):
        for method in ("_handle_attention_backend_compatibility", "_handle_sampling_backend"):
            try:
                getattr(sa.ServerArgs, method)(me)
            except Exception:  # noqa: BLE001 - later checks need a real model; the choice is made first
                pass
    if me.attention_backend is None or me.sampling_backend is None:
        return {"error": "the image's SGLang picks its default backends where sglbuild cannot ask it without a GPU"}
    return {"attention_backend": me.attention_backend, "sampling_backend": me.sampling_backend,
            "via": "ServerArgs._handle_attention_backend_compatibility"}


def main(argv: list) -> int:
    import sglang

    p = parser()
    # The version too: this child has imported sglang, so the static probe need not start another for it.
    answer: dict = {"version": getattr(sglang, "__version__", None), "choices": choices(p), "parsed": None, "error": None, "defaults": None}
    archs = [a for a in (argv[1] if len(argv) > 1 else "").split(",") if a]
    try:
        flags = json.loads(argv[0])
        answer["parsed"] = parse(p, flags)
        args = p.parse_args(["--model-path", "sglbuild-probe", *flags] if "--model-path" not in flags else flags)
        for name in ("attention_backend", "prefill_attention_backend", "decode_attention_backend", "sampling_backend"):
            setattr(args, name, None)  # what SGLang picks when no flag names a backend (the rest of the flags kept)
        answer["defaults"] = {}
        for arch in archs:
            try:
                answer["defaults"][arch] = default_backends(args, arch)
            except Exception as exc:  # noqa: BLE001 - reported per architecture
                answer["defaults"][arch] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    except RejectedFlags as exc:
        answer["error"] = f"error: {exc}"
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
