"""medvid.zeroshot."""
