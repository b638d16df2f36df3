"""medvid.report."""
