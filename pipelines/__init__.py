"""Jobs: config in, files out. The CLI calls ``run(cfg)`` of each module."""
