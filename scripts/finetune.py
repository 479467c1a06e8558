#!/usr/bin/env python
"""Fine-tune MMSA on a MoleculeNet set or a CSV, over several seeds (thin Accelerate entry point).

    accelerate launch --cpu --num_processes 1 scripts/finetune.py --model runs/pretrain-small/final --dataset bbbp --seeds 0 1 2

All options: ``python scripts/finetune.py --help``. The loop lives in ``mmsa_hf.training.finetune``.
"""

from mmsa_hf.training.finetune import main

if __name__ == "__main__":
    main()
