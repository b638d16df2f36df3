"""medvid.io."""
