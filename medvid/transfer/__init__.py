"""Downstream transfer of a frozen video model: the probe protocols (``protocol``: shared settings, label
fractions and k-shot over seeds; ``echo``: EchoNet-Dynamic EF / phenotypes; ``surgery``: phases / tools, with
zero-shot through ``medvid.zeroshot.recognise``), linear / logistic probes with validation-chosen
regularisation (``probe``), label-fraction and k-shot samplers (``fewshot``), a dilated temporal
convolution head over per-second embeddings (``temporal``), fine-tuning of the temporal module on
cached backbone features (``finetune``), and frozen features computed once (``features``)."""
