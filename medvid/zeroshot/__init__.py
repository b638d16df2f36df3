"""Zero-shot recognition from prompt embeddings: the recogniser every job uses (``recognise``: embed →
calibrate → head → adapt → smooth, its settings and the prompt-file table), prompt sets (``prompts``),
phase / tool / echo-finding classifiers (``classifier``), streaming video embedding (``embed``),
calibration, prompt expansion, self-training (``adaptation``), temporal smoothing (``smoothing``) and
figures (``plots``)."""
