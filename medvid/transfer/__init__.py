"""Downstream transfer of a frozen video model: linear / logistic probes with validation-chosen
regularisation (``probe``), label-fraction and k-shot samplers (``fewshot``), a dilated temporal
convolution head over per-second embeddings (``temporal``), fine-tuning of the temporal module on
cached backbone features (``finetune``), and frozen features computed once (``features``)."""
