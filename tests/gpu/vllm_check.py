"""Run by tests/gpu/test_served.py under a given vLLM (for 0.26: PYTHONPATH = the files of
the wheel the device installs, .gpu-wheels/vllm-0.26.0-*.whl): parse each engine argv (a JSON
list of them on stdin, each what follows `-m vllm.entrypoints.openai.api_server`) with that
vLLM's own parser, and read the model folder the way its ModelConfig does. Prints one line
`VLLM_CHECK [...]` with a JSON object per argv.

On a machine without a GPU, vLLM's platform detection finds none; the CPU platform stands in
(the parser's defaults that depend on it are not asserted). `engine_config` is vLLM's
create_engine_config: the server's whole config validation except what the CUDA platform adds.
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any


def main() -> None:
    warnings.simplefilter("ignore")
    argvs: list[list[str]] = json.load(sys.stdin)
    import vllm.platforms as platforms
    from vllm.platforms.cpu import CpuPlatform

    try:
        found = platforms.current_platform.device_type
    except RuntimeError:
        found = ""
    if not found:
        platforms.current_platform = CpuPlatform()
    from vllm.engine.arg_utils import EngineArgs
    from vllm.entrypoints.openai.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())
    print("VLLM_CHECK " + json.dumps([_check(parser, EngineArgs, a) for a in argvs], default=str))


def _check(parser: Any, engine_args: Any, argv: list[str]) -> dict[str, Any]:
    import vllm

    args = parser.parse_args(argv)
    engine = engine_args.from_cli_args(args)
    try:  # the whole config (model, parallel, cache, scheduler, reasoning) as the server builds it
        config = engine.create_engine_config()
        par = config.parallel_config
        built: dict[str, Any] = {
            "ok": True, "tp": par.tensor_parallel_size, "pp": par.pipeline_parallel_size,
            "dp": par.data_parallel_size, "ep": par.enable_expert_parallel,
            "world_size": par.world_size, "max_num_seqs": config.scheduler_config.max_num_seqs,
        }  # fmt: skip
    except Exception as exc:  # reported: the test judges it
        built = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:400]}
    model = engine.create_model_config()
    hf = model.hf_config
    out: dict[str, Any] = {
        "version": vllm.__version__,
        "args": {k: v for k, v in vars(args).items() if _plain(v)},
        "capture_sizes": engine.compilation_config.cudagraph_capture_sizes,
        "engine_config": built,
        "model": {
            "architectures": model.architectures,
            "quantization": model.quantization,
            "use_mla": model.use_mla,
            "num_hidden_layers": hf.num_hidden_layers,
            "num_nextn_predict_layers": getattr(hf, "num_nextn_predict_layers", None),
            "n_routed_experts": getattr(hf, "n_routed_experts", None),
            "max_model_len": model.max_model_len,
            "vocab_size": hf.vocab_size,
        },
    }
    return out


def _plain(v: object) -> bool:
    return v is None or isinstance(v, str | int | float | bool | list | dict)


if __name__ == "__main__":
    main()
