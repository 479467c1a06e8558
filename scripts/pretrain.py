#!/usr/bin/env python
"""MMSA self-supervised pretraining (thin Accelerate entry point).

    accelerate launch --cpu --num_processes 1 scripts/pretrain.py --config small
    accelerate launch --multi_gpu --mixed_precision bf16 scripts/pretrain.py --config base ...

All options: ``python scripts/pretrain.py --help``. The loop lives in ``mmsa_hf.training.pretrain``.
"""

from mmsa_hf.training.pretrain import main

if __name__ == "__main__":
    main()
