"""medvid: clinical and surgical video foundation models."""
__version__ = "0.1.0"
