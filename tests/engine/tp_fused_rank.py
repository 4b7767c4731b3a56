"""One rank of test_engine_tp's check of the fused decode step under tensor parallelism, on the CPU: gloo for
the collectives, Triton's interpreter for the kernels (sped up by triton_interpreter.py). Launched by
`mambapipe.parallel.launch` with this directory on PYTHONPATH:

    python -m tp_fused_rank ENGINE_DIR PROMPT_JSON STEP_TOKENS_JSON OUT

Prefills the prompt (one row, the torch path: the CPU's), then runs `fused_decode` on each step token in turn;
rank 0 saves the logits of the prefill and of every step, (1, V) each, to OUT.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")  # before Triton is imported: the kernels run interpreted

import torch  # noqa: E402
from triton_interpreter import skip_repeated_language_patching  # noqa: E402

from mambapipe.engine.api import load_engine  # noqa: E402
from mambapipe.engine.kernels.decode import fused_decode  # noqa: E402
from mambapipe.parallel import init_distributed, shutdown_distributed  # noqa: E402


def main() -> None:
    skip_repeated_language_patching()
    engine, prompt, steps, out = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
    rank, _ = init_distributed("cpu")
    try:
        generator = load_engine(engine, "cpu")
        model, state = generator.model, generator.state
        logits = [model.prefill(torch.tensor([prompt]), torch.tensor([len(prompt)]), state, torch.tensor([0]))]
        for token in steps:
            logits.append(fused_decode(model, torch.tensor([token]), state, 0))
        if rank == 0:
            torch.save(logits, out)
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    main()
