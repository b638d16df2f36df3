"""medvid.training."""
