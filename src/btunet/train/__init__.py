"""Training: Barlow Twins pre-training of an encoder (``pretrain``), fine-tuning from strokes or masks
(``finetune``), the loop both share, and the forest teacher's pseudo-labels."""
