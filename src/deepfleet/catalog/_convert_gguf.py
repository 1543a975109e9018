"""Child process: GGUF -> Hugging Face folder (bf16 safetensors + tokenizer).

Prints `STEP <text>` lines that the parent shows as progress. transformers refuses to save a
GGUF-dequantized model while it still carries the quantizer, so that is dropped first.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(gguf: Path, out: Path) -> None:
    print("STEP loading tokenizer", flush=True)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    print("STEP loading weights (dequantizing GGUF)", flush=True)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model = model.to(torch.bfloat16)
    print("STEP writing safetensors", flush=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    print("STEP done", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
