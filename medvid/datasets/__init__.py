"""medvid.datasets."""
