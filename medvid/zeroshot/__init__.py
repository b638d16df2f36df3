"""Zero-shot heads from prompt embeddings: prompt sets (``prompts``), phase / tool / echo-finding
classifiers (``classifier``), streaming video embedding (``embed``), temporal smoothing
(``smoothing``) and figures (``plots``)."""
