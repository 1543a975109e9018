"""Model folders for the GPU runs: config.json + SmolLM2's tokenizer, served with dummy weights.

No weights can reach the lent GPU machine, so vLLM serves these with `--load-format dummy`
(random weights: real speed and memory, meaningless text). Every vocabulary is cut to 49,152
tokens so that the bundled model's tokenizer (SmolLM2, the one tokenizer we can carry) fits.

- qwen2-7b: DeepSeek-R1-Distill-Qwen-7B's published config (Qwen2, 7.0B with this vocabulary).
- qwen2-1.5b: DeepSeek-R1-Distill-Qwen-1.5B's (a smaller engine for the routing scenario).
- dsv3-8l: DeepSeek-V3/R1's config cut to 8 layers (3 dense + 5 MoE with 256 experts), fp8
  128x128 block-quantized as published, MTP off.
- r1: DeepSeek-R1 at full size for one 8 x H200 node (issue 12): the same config with all 61
  layers (3 dense + 58 MoE), 671B parameters less the 1.15B that the shorter vocabulary saves
  (embedding and head: 129,280 -> 49,152 rows of 7,168), MTP off (num_nextn_predict_layers 0:
  vLLM 0.26 builds the MTP layer only for speculative decoding, and the planner then counts
  none).

    python -m benchmarks.gpu.model_dirs OUT_DIR [--tokenizer DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from deepfleet.catalog.model_configs import BUILTIN_CONFIGS

VOCAB = 49152
BOS, EOS = 1, 2
R1_LAYERS = 61  # SmolLM2's <|im_start|> and <|im_end|>
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
)


def _distill(hub_id: str) -> dict[str, Any]:
    """A Qwen2 distill's config.json: the catalog's architecture keys plus the rest of the
    published file (deepseek-ai/DeepSeek-R1-Distill-Qwen-*)."""
    arch = dict(BUILTIN_CONFIGS[hub_id])
    return arch | {
        "attention_dropout": 0.0,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "max_window_layers": arch["num_hidden_layers"],
        "rms_norm_eps": 1e-06,
        "rope_theta": 10000,
        "sliding_window": 4096,
        "use_sliding_window": False,
        "use_cache": True,
        "use_mrope": False,
        "vocab_size": VOCAB,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
    }


def deepseek_v3_slice(layers: int = 8) -> dict[str, Any]:
    """DeepSeek-R1's config.json (the catalog's keys plus the rest of the published file, less
    `auto_map`: vLLM has the model built in) with `layers` decoder layers and MTP off."""
    base = dict(BUILTIN_CONFIGS["deepseek-ai/DeepSeek-R1"])
    return base | {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "aux_loss_alpha": 0.001,
        "ep_size": 1,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "n_group": 8,
        "norm_topk_prob": True,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-06,
        "rope_scaling": {
            "beta_fast": 32,
            "beta_slow": 1,
            "factor": 40,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
            "original_max_position_embeddings": 4096,
            "type": "yarn",
        },
        "rope_theta": 10000,
        "routed_scaling_factor": 2.5,
        "scoring_func": "sigmoid",
        "seq_aux": True,
        "topk_group": 4,
        "topk_method": "noaux_tc",
        "use_cache": True,
        "num_hidden_layers": layers,
        "num_nextn_predict_layers": 0,
        "vocab_size": VOCAB,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
    }


def configs() -> dict[str, dict[str, Any]]:
    return {
        "qwen2-7b": _distill("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"),
        "qwen2-1.5b": _distill("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
        "dsv3-8l": deepseek_v3_slice(8),
        "r1": deepseek_v3_slice(R1_LAYERS),
    }


def write_models(out: Path, tokenizer: Path) -> list[Path]:
    """One folder per model under `out` (rewritten each time; small)."""
    written = []
    for name, config in configs().items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        for file in TOKENIZER_FILES:
            if (tokenizer / file).is_file():
                shutil.copyfile(tokenizer / file, folder / file)
        written.append(folder)
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--tokenizer", type=Path, help="folder with tokenizer.json (default: bundled)")
    args = p.parse_args()
    tokenizer = args.tokenizer
    if tokenizer is None:
        from deepfleet.catalog import bundled

        tokenizer = bundled.prepare().path
    for folder in write_models(args.out, tokenizer):
        print(folder)


if __name__ == "__main__":
    main()
